"""The train and evaluate stages against a real MLflow (SQLite in a temporary folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctcid.errors import TrackingUnavailable
from ctcid.evaluation.evaluate import evaluate_models
from ctcid.model.predict import load_model
from ctcid.model.train import train_backbone
from ctcid.paths import StageInputs
from ctcid.split import read_split
from ctcid.tracking import PARENT_TAG, check_reachable, lineage_tags, log_data_inputs, open_experiment
from factory import tiny_params


@pytest.fixture(scope="module")
def trained(synthetic_stage_inputs, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("train")
    params = tiny_params(root, ["alexnet"], epochs=2)
    i = synthetic_stage_inputs
    inputs = StageInputs(i["crops"], i["manifest"], i["split"])
    outputs = train_backbone(
        params, "alexnet", inputs, root / "models", root / "reports", show_progress=False
    )
    return root, params, outputs


def test_cross_validation_leaves_a_parent_run_with_one_child_per_fold(
    trained, synthetic_stage_inputs
) -> None:
    root, params, outputs = trained
    n_folds = len(read_split(synthetic_stage_inputs["split"]).folds)
    client = MlflowClient(params.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name("ctcid-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = client.get_run(outputs.run_id)
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == outputs.run_id]

    assert len(runs) == 1 + n_folds
    assert len(children) == n_folds
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["backbone"] == "alexnet"
    assert parent.data.params["train.input_size"] == "16"
    assert parent.data.metrics["cv.auc"] == pytest.approx(outputs.cv.auc)
    assert "threshold" in parent.data.metrics
    for child in children:
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "val_auc")
        assert [m.step for m in history] == [1, 2]
        assert "best.auc" in child.data.metrics
    artifacts = {
        a.path for folder in ("plots", "predictions") for a in client.list_artifacts(outputs.run_id, folder)
    }
    assert artifacts == {"plots/cv_roc.png", "plots/cv_confusion.png", "predictions/alexnet_oof.csv"}


def test_train_stage_writes_the_model_and_reports(trained, synthetic_stage_inputs) -> None:
    root, params, outputs = trained
    split = read_split(synthetic_stage_inputs["split"])
    loaded = load_model(root / "models" / "alexnet" / "model.pt")
    assert loaded.info.threshold == pytest.approx(outputs.cv.threshold)
    assert loaded.info.channels == ("DAPI", "CEP8", "CD45")
    assert json.loads((root / "models" / "alexnet" / "run.json").read_text())["run_id"] == outputs.run_id
    summary = json.loads((root / "reports" / "train" / "alexnet.json").read_text())
    assert summary["n_folds"] == len(split.folds)
    oof = pd.read_csv(root / "reports" / "train" / "alexnet_oof.csv")
    assert sorted(oof["crop_index"]) == sorted(split.train.tolist())  # every training cell, out of fold
    assert oof["y_score"].between(0, 1).all()


def test_evaluate_reports_test_metrics_and_logs_them_to_the_training_run(
    trained, synthetic_stage_inputs
) -> None:
    root, params, outputs = trained
    i = synthetic_stage_inputs
    inputs = StageInputs(i["crops"], i["manifest"], i["split"])
    report = evaluate_models(params, inputs, root / "models", root / "reports", i["raw"])
    assert report.selected == "alexnet"
    assert set(report.models) == {"alexnet", "rule", "gbm"}
    assert report.test.count_source == "annotations"
    assert report.test.detections == 96  # all cells of the test samples, unlabelled ones too
    on_disk = json.loads((root / "reports" / "metrics.json").read_text())
    assert on_disk["models"]["alexnet"]["operating"]["threshold"] == pytest.approx(outputs.cv.threshold)
    for name in ("alexnet", "rule", "gbm"):
        assert (root / "reports" / "plots" / "roc" / f"{name}.csv").is_file()
        assert (root / "reports" / "plots" / "confusion" / f"{name}.csv").is_file()
        assert (root / "reports" / "plots" / f"confusion_{name}.png").is_file()
    assert (root / "reports" / "plots" / "roc.png").is_file()
    assert (root / "reports" / "plots" / "patient_counts.png").is_file()
    # the annotations hold one CTC more per sample than the labelled cells
    labelled = pd.read_parquet(i["manifest"]).groupby("sample")["true_label"].sum()
    client = MlflowClient(params.mlflow.tracking_uri)
    run = client.get_run(outputs.run_id)
    assert run.data.metrics["test.auc"] == pytest.approx(on_disk["models"]["alexnet"]["default"]["auc"])
    assert {a.path for a in client.list_artifacts(outputs.run_id, "test")} >= {"test/roc.png"}
    counts = pd.read_csv(root / "reports" / "test_predictions.csv")
    assert len(counts) == 96 and counts["alexnet"].between(0, 1).all()
    assert report.models["alexnet"].patients.n_patients == len(labelled)
    assert on_disk["test"] == report.to_dict()["test"] and on_disk["selected"] == report.selected
    # calibration of every probabilistic model on the test cells, none for the rule's 0/1 calls
    for name in ("alexnet", "gbm"):
        assert 0.0 <= on_disk["models"][name]["calibration"]["brier"] <= 1.0
        assert on_disk["models"][name]["calibration"]["n"] == report.test.cells
    assert "calibration" not in on_disk["models"]["rule"]
    assert (root / "reports" / "plots" / "reliability.png").stat().st_size > 0
    # the synthetic crops have no raw fields to describe: no drift reference, said plainly
    assert (root / "reports" / "drift_reference.json").read_text() == "null\n" and "drift" not in on_disk


def test_lineage_tags_read_git_and_dvc_hashes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.dvc").write_text("outs:\n- md5: abc123.dir\n  path: raw\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  segment:\n    cmd: ctcid segment\n    outs:\n"
        "    - path: data/segment\n      md5: def456.dir\n    - path: reports/x.json\n      md5: 0\n"
    )
    tags = lineage_tags(tmp_path)
    assert tags["dvc.raw_md5"] == "abc123.dir"
    assert tags["dvc.md5:data/segment"] == "def456.dir"
    assert not any("reports" in key for key in tags)
    assert "git_commit" not in tags  # not a git repository: tolerated, not guessed


def test_the_experiment_opens_on_the_training_runs_in_mlflow_3s_ui(trained) -> None:
    _, params, _ = trained
    experiment = MlflowClient(params.mlflow.tracking_uri).get_experiment_by_name("ctcid-test")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_made_before_the_kind_tag_gets_it(tmp_path: Path) -> None:
    params = tiny_params(tmp_path, ["alexnet"])
    client = MlflowClient(params.mlflow.tracking_uri)
    old = client.create_experiment(params.mlflow.experiment)
    _, experiment_id = open_experiment(params.mlflow)
    assert experiment_id == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_dvc_tracked_data_becomes_dataset_inputs_with_digest_source_and_context(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    raw_md5 = "0123456789abcdef0123456789abcdef.dir"  # DVC's 36 characters: MLflow's digest limit
    (tmp_path / "data" / "raw.dvc").write_text(f"outs:\n- md5: {raw_md5}\n  path: raw\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  split:\n    cmd: ctcid split\n    outs:\n"
        "    - path: data/split\n      md5: fedcba9876543210fedcba9876543210.dir\n"
    )
    params = tiny_params(tmp_path, ["alexnet"])
    client, experiment_id = open_experiment(params.mlflow)
    run_id = client.create_run(experiment_id).info.run_id
    log_data_inputs(client, run_id, "test", tmp_path)
    inputs = client.get_run(run_id).inputs.dataset_inputs
    found = {i.dataset.name: i for i in inputs}
    assert set(found) == {"ctcid-raw", "ctcid-split"}  # no segment hash yet: left out, not invented
    split = found["ctcid-split"]
    assert split.dataset.digest == "fedcba9876543210fedcba9876543210.dir"
    assert str(tmp_path / "data" / "split") in split.dataset.source
    assert {t.key: t.value for t in split.tags}["mlflow.data.context"] == "test"


def test_a_tracking_server_that_does_not_answer_fails_fast_naming_it() -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nobody listens there
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"{uri} does not answer"):
        check_reachable(uri)
    assert time.monotonic() - start < 10
    check_reachable("sqlite:///anything.db")  # no server to probe
