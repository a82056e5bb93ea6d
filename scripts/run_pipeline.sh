#!/usr/bin/env bash
# The main job behind `make run`: raw data under DVC, then `dvc repro` of params.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
eval "$(python -m ctcid.offline)"  # no telemetry: src/ctcid/offline.py

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bash scripts/raw_data.sh  # data/raw as params.yaml describes it, under DVC

say "Running the pipeline (dvc repro)"
dvc repro

say "Pushing data and stage outputs to the DVC remote"
dvc push -q || echo "warning: dvc push failed; outputs are still in the local cache" >&2

say "Results"
python - <<'PY'
import json


def num(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def line(name, model):
    cells, patients = model.get("operating") or model.get("cells") or {}, model.get("endpoints") or {}
    print(
        f"{name:>10}: AUC {num(cells.get('auc'))}  sensitivity {num(cells.get('sensitivity'))}  "
        f"specificity {num(cells.get('specificity'))}  | per patient: MAE {num(patients.get('mae'), 2)}  "
        f">=1 CTC sensitivity {num(patients.get('sensitivity_ge1'), 2)} specificity {num(patients.get('specificity_ge1'), 2)}"
    )


report = json.load(open("reports/metrics.json"))
chosen = report["selected"]
print("test set:")
for name in (chosen, "gbm", "rule"):
    if name in report["models"]:
        line(name, report["models"][name])
print(f"selected on {report['selected_by']}: {chosen}; every number: dvc metrics show")
try:
    audit = json.load(open("reports/audit.json"))
except OSError:
    audit = {"cohorts": {}}
for cohort, values in audit["cohorts"].items():
    print(f"sealed cohort {cohort} (reports/audit.md):")
    for name in ("champion", "gbm", "rule"):
        if name in values["models"]:
            line(name, values["models"][name])
PY

say "Model registry"
ctcid models --limit 5
python - <<'PY'
import json
decision = json.load(open("reports/promotion.json"))
action, name = decision["action"], decision["model_name"]
if action in ("promoted", "forced", "kept"):
    print(f"{name}@champion is version {decision['champion_after']} ({action}); model card: reports/model_card.md")
else:
    print(f"the gate refused challenger v{decision['challenger']}: {'; '.join(decision['failed'])}")
    print(f"{name}@champion stays {decision['champion_before'] or 'unset'}; see reports/promotion.json")
PY
say "Pages (docs/pages.md)"
ctcid ui --links
say "Service"
python - <<'PY'
import json
packaged = json.load(open("reports/package.json"))
print(f"Bento {packaged['bento']} serves {packaged['model_name']} v{packaged['version']} ({packaged['alias']})")
PY
cat <<MSG

Outputs:
  data/raw/                  raw fields (DVC-tracked: data/raw.dvc)
  data/segment/              crops.npy + manifest.parquet
  reports/                   metrics, plots, segmentation overlay, Data Docs (reports/data_docs/index.html,
                             self-contained: opens offline)
  models/<backbone>/         trained models
  reports/model_card.md      the registered version's model card; reports/promotion.json: the gate's decision
  reports/external.md        the champion, every backbone, the GBM and the rule on cohorts never trained on:
                             per-patient endpoints, calibration, drift (docs/external.md; figures in reports/external/)
  reports/audit.md           the sealed cohort, read by no decision: the clean per-patient estimate
                             (docs/evaluation.md#what-each-cohort-may-influence)

Registry:    .venv/bin/ctcid models     (promote: ctcid promote; undo: ctcid rollback; docs/registry.md)
MLflow UI:   make mlflow      (ctcid ui: mlflow ui on mlflow.db, http://127.0.0.1:5000; open the links above:
             the ctcid experiment's runs, and ctcid-classifier with its champion and challenger)
Optuna:      make dashboard   (ctcid dashboard: optuna-dashboard on optuna.db, http://127.0.0.1:8080/dashboard;
             one study per backbone, named <prefix>-<backbone>-data<hash>-cfg<hash>)
Metrics:     .venv/bin/dvc metrics show      Plots: .venv/bin/dvc plots show
Service:     .venv/bin/ctcid serve           (http://127.0.0.1:3000, Swagger UI at /; docs/serving.md)
             curl -F field=@data/raw/S0000/f000.tif http://127.0.0.1:3000/count_field
New data:    add samples to data/raw, '.venv/bin/dvc add data/raw', then 'make retrain'
             (the gate decides; summary in reports/retrain_summary.md; docs/retraining.md)
MSG
