"""`dvc repro` of the tiny configuration in a fresh git repository: the whole pipeline, for real.

One module-scoped run feeds every assertion, because the run is the expensive part (minutes).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from e2e_support import BACKBONES, _env, registry, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_every_stage_wrote_its_outputs(project: Path) -> None:
    assert (project / "data/segment/crops.npy").stat().st_size > 0
    assert json.loads((project / "reports/validation.json").read_text())["success"] is True
    split = json.loads((project / "data/split/split.json").read_text())
    assert len(split["folds"]) == 5
    for backbone in BACKBONES:
        assert (project / "models" / backbone / "model.pt").exists()
        assert (project / "reports/plots/roc" / f"{backbone}.csv").exists()
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["selected"] in BACKBONES
    assert (project / "reports/segmentation_overlay.png").stat().st_size > 0


def test_external_cohorts_scored_by_champion_and_rule_and_the_shifted_site_is_flagged(project: Path) -> None:
    report = json.loads((project / "reports/external.json").read_text())["cohorts"]
    assert set(report) == {"same_site", "second_site"}
    for name, cohort in report.items():
        assert {"champion", "gbm", "rule", *BACKBONES} <= set(cohort["models"]), name
        champion = cohort["models"]["champion"]
        assert champion["patients"]["n_patients"] == cohort["samples"]
        low, high = champion["patients_ci95"]["mae"]["low"], champion["patients_ci95"]["mae"]["high"]
        assert low <= champion["patients"]["mae"] <= high
        assert 0.0 <= champion["calibration"]["brier"] <= 1.0
        assert (project / "reports/external" / name / "gallery.png").stat().st_size > 0
        assert (project / "reports/external" / name / "bland_altman_champion.png").stat().st_size > 0
    # every field of the shifted site lies far outside the training fields; few of the same site do
    assert report["second_site"]["drift"]["fields"]["share_flagged"] == 1.0
    assert report["same_site"]["drift"]["fields"]["share_flagged"] <= 0.5
    assert "## second_site" in (project / "reports/external.md").read_text()
    # evaluate fitted the reference on the training fields and scored the test fields with it
    reference = json.loads((project / "reports/drift_reference.json").read_text())
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert reference["n_fields"] >= 5 and metrics["drift"]["fields"] >= 1


def test_the_audit_step_alone_scores_the_sealed_cohort_with_every_endpoint(project: Path) -> None:
    external = json.loads((project / "reports/external.json").read_text())["cohorts"]
    promotion = json.loads((project / "reports/promotion.json").read_text())
    assert "holdout" not in external  # 'ctcid external' leaves the sealed cohort to the audit
    assert not [c for c in promotion["criteria"] if "holdout" in c["name"]]  # the gate never reads it
    audit = json.loads((project / "reports/audit.json").read_text())
    assert set(audit["cohorts"]) == {"holdout"}
    assert len(audit["run"]["commit"]) >= 40 and audit["run"]["date"]
    models = audit["cohorts"]["holdout"]["models"]
    assert {"champion", "gbm", "rule", *BACKBONES} <= set(models)
    for name, model in models.items():
        endpoints, intervals = model["endpoints"], model["endpoints_ci95"]
        assert endpoints["n_patients"] == audit["cohorts"]["holdout"]["samples"], name
        for key in ("sensitivity_ge1", "specificity_ge3", "ppv_ge5", "kappa_ge1", "lob", "pb_slope"):
            assert key in endpoints and key in intervals, (name, key)
        # 2 specimens imaged twice: a within-specimen SD for every scorer
        assert model["repeatability"]["n_specimens"] == 2 and model["repeatability"]["sd"] >= 0.0
        assert model["review"]["patients"] == endpoints["n_patients"]
    assert "versus_rule" in models["champion"] and "versus_rule" not in models["rule"]
    assert models["rule"]["cells"]["auc"] is None  # the rule's 0/1 calls have no AUC
    text = (project / "reports/audit.md").read_text()
    assert "## holdout" in text and "Call >= 3 CTC" in text and "Repeatability" in text
    assert (project / "reports/audit/holdout/predictive_values_ge1.png").stat().st_size > 0


def test_mlflow_has_a_parent_run_per_backbone_with_fold_children(project: Path) -> None:
    import mlflow

    metrics = json.loads((project / "reports/metrics.json").read_text())

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ctcid")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children: dict[str, int] = {}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent:
            children[parent] = children.get(parent, 0) + 1
    by_backbone = {r.data.params.get("backbone"): run_id for run_id, r in parents.items()}
    assert set(BACKBONES) <= set(by_backbone)
    for backbone in BACKBONES:
        run_id = by_backbone[backbone]
        # train reuses the best tuning trial's folds when they are exactly its configuration;
        # the fold runs are then nested under that trial's run
        folds_parent = parents[run_id].data.tags.get("tune.trial_run_id", run_id)
        assert children.get(folds_parent) == 5, f"{backbone}: {children.get(folds_parent)} fold runs"
        logged = parents[run_id].data.metrics
        assert {"test.auc", "test_operating.sensitivity", "test_operating.specificity"} <= set(logged)
        # evaluate logged the very numbers it wrote to metrics.json onto the training run
        reported = metrics["models"][backbone]
        assert logged["test.auc"] == pytest.approx(reported["default"]["auc"])
        assert logged["test_operating.specificity"] == pytest.approx(reported["operating"]["specificity"])


def test_each_backbone_was_tuned_and_trained_with_its_best_trial(project: Path) -> None:
    import optuna

    storage = f"sqlite:///{project / 'optuna.db'}"
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    for backbone in BACKBONES:
        report = json.loads((project / "reports/tune" / f"{backbone}.json").read_text())
        assert report["study"] in studies and report["backbone"] == backbone
        finished = report["trials"].get("complete", 0) + report["trials"].get("pruned", 0)
        assert finished >= 2 or report["seconds"] >= 60  # n_trials, or the budget ran out
        assert (project / "reports/tune/figures" / backbone / f"{backbone}_figures.html").exists()
        best = report["best"]
        if best is None:
            continue
        trained = json.loads((project / "reports/train" / f"{backbone}.json").read_text())
        # the tuned values reached the model: its CV is the best trial's
        assert trained["objective"][report["objective"]] == pytest.approx(best["value"])


def test_the_run_ends_with_a_registered_champion_its_card_and_lineage(project: Path) -> None:
    from ctcid.registry_client import CHALLENGER, CHAMPION

    models = registry(project)
    champion, challenger = models.alias(CHAMPION), models.alias(CHALLENGER)
    assert champion is not None and challenger is not None
    assert str(champion.version) == str(challenger.version) == "1"
    decision = json.loads((project / "reports/promotion.json").read_text())
    assert decision["action"] == "promoted" and decision["champion_after"] == "1"
    # the worst-site guard-rail scored the challenger on every external cohort
    sites = {c["name"]: c for c in decision["criteria"] if c["name"].startswith("specificity at ")}
    assert set(sites) == {"specificity at same_site >= 0", "specificity at second_site >= 0"}
    assert all(0.0 <= c["challenger"] <= 1.0 and c["verdict"] == "pass" for c in sites.values())
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert champion.tags["backbone"] == metrics["selected"]
    raw_md5 = yaml.safe_load((project / "data/raw.dvc").read_text())["outs"][0]["md5"]
    assert champion.tags["dvc.md5.data/raw"] == raw_md5
    assert champion.tags["data_source"] == "simulated"
    assert "Not for diagnosis" in (project / "reports/model_card.md").read_text()
    listing = run(project, "ctcid", "models").stdout
    assert "champion" in listing and metrics["selected"] in listing
    packaged = json.loads((project / "reports/package.json").read_text())
    assert (packaged["version"], packaged["alias"]) == ("1", "champion")
    assert (project / ".bentoml" / "bentos" / "ctcid-classifier-service").is_dir()


def test_the_readme_serve_command_counts_a_simulated_field(project: Path) -> None:
    from factory import free_port

    port = free_port()
    server = subprocess.Popen(
        ["ctcid", "serve", "--port", str(port)], cwd=project, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        field = project / "data/raw/S0000/f000.tif"
        upload = {"field": (field.name, field.read_bytes())}
        answer = requests.post(f"{url}/count_field", files=upload, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "ctcid-classifier v1" and answer.json()["cells"] > 0
        served = requests.get(f"{url}/model", timeout=10).json()
        # trained by default on field-standardised crops, and served so
        assert served["alias"] == "champion" and served["standardise"] is True
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output[-3000:]
    assert f"curl -F field=@data/raw/S0000/f000.tif {url}/count_field" in output


def test_dvc_metrics_and_a_second_repro_is_a_no_op(project: Path) -> None:
    shown = run(project, "dvc", "metrics", "show", "--json").stdout
    assert "metrics.json" in shown and "segmentation.json" in shown
    assert "promotion.json" in shown
    status = run(project, "dvc", "status", "--json").stdout
    assert json.loads(status or "{}") == {}
    # nothing changed: registering again would reuse the version; nothing new appears
    run(project, "dvc", "repro")
    assert [str(v.version) for v in registry(project).versions()] == ["1"]
    plots = run(project, "dvc", "plots", "show", "-o", "dvc_plots")
    assert "failed" not in plots.stdout + plots.stderr
    page = (project / "dvc_plots" / "index.html").read_text()
    assert all(backbone in page for backbone in BACKBONES)


def test_raw_data_round_trips_through_the_dvc_remote(tmp_path: Path, project: Path) -> None:
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    run(clone, "dvc", "pull", "-q", "data/raw.dvc")
    original = sorted(p.relative_to(project) for p in (project / "data/raw").rglob("*.tif"))
    pulled = sorted(p.relative_to(clone) for p in (clone / "data/raw").rglob("*.tif"))
    assert pulled and pulled == original
    assert all((clone / path).read_bytes() == (project / path).read_bytes() for path in pulled)
