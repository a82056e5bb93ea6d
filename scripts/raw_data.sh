#!/usr/bin/env bash
# make run's first step: data/raw as params.yaml describes it, versioned with DVC (docs/data.md).
# Pulls the committed version when there is none here, then `ctcid simulate --sync` simulates it
# when missing, re-simulates it when it was drawn with other seed or simulate.* settings (and
# says which), leaves it when current, and refuses when a lab's ingested samples are in the way.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
eval "$(python -m ctcid.offline)"  # no telemetry: src/ctcid/offline.py

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -d .dvc ]; then
  say "Initialising DVC"
  dvc init -q
fi
if [ -z "$(dvc remote list)" ]; then
  dvc remote add -d local .dvc-remote
fi

if [ ! -d data/raw ] && [ -f data/raw.dvc ] && dvc pull -q data/raw.dvc 2>/dev/null; then
  say "Raw data pulled from the DVC remote"
fi

say "Raw data: data/raw against params.yaml"
ctcid simulate --sync --out data/raw

say "Versioning data/raw with DVC"
dvc add -q data/raw
