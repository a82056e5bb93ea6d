#!/usr/bin/env bash
# docs/img/ui_*.png: one screenshot of each page a user opens, as the browser tests take them
# (docs/pages.md). Runs tests/ui (it builds the tiny e2e project, minutes), or copies from the
# basetemp of a run that already did: scripts/ui_screenshots.sh [PYTEST_BASETEMP]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-}
if [ -z "$base" ]; then
  eval "$(.venv/bin/python -m ctcid.offline)"
  base=$(mktemp -d)
  .venv/bin/python -m pytest tests/ui -p no:randomly -q --basetemp="$base"
fi
copy() {
  local shot
  shot=$(find "$base" -name "$1.png" -print -quit)
  [ -n "$shot" ] || { echo "error: no $1.png under $base: did tests/ui run there?" >&2; exit 1; }
  cp "$shot" "docs/img/$2.png"
  echo "docs/img/$2.png <- $shot"
}
copy test_index_shows_styled_tables_of_every_validation_and_loads_nothing_remote ui_data_docs
copy test_the_runs_link_lists_the_five_backbone_runs_in_the_training_view ui_mlflow_runs
copy test_the_model_link_shows_the_registered_model_with_its_champion ui_mlflow_model
copy test_the_dashboard_lists_the_studies_ctcid_dashboard_names ui_optuna_dashboard
copy test_swagger_ui_lists_count_field ui_swagger
