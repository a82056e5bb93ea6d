#!/usr/bin/env bash
# The test command behind `make test`. pytest exits 5 when it collects nothing; that is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 BENTOML_DO_NOT_TRACK=True MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
