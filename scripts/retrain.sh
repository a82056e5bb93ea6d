#!/usr/bin/env bash
# The retrain entry point behind `make retrain` and .github/workflows/retrain.yml:
# dvc pull, dvc repro (register + the promotion gate + package are stages), reports/retrain_summary.md.
# Exit status: 0 promoted, 3 champion kept, 1 failed (docs/retraining.md).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
eval "$(python -m ctcid.offline)"  # no telemetry: src/ctcid/offline.py
exec ctcid retrain "$@"
