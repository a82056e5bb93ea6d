#!/usr/bin/env bash
# The test command behind `make test`. pytest exits 5 when it collects nothing; that is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
eval "$(.venv/bin/python -m ctcid.offline)"  # no telemetry: src/ctcid/offline.py
# One worker per core; tests sharing an expensive fixture stay on one worker (tests/conftest.py).
# The 15 slowest tests are listed at the end, so that growth is seen.
.venv/bin/python -m pytest -n auto --no-loadscope-reorder --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
