#!/usr/bin/env bash
# The test command behind `make test`. pytest exits 5 when it collects nothing; that is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
eval "$(.venv/bin/python -m ctcid.offline)"  # no telemetry: src/ctcid/offline.py
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
