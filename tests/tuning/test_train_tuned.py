"""``ctcid train --tuned``: the best trial's values, and its cross-validation reused when it is the same."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from tuning_support import BACKBONE, Tuned, children, stage_inputs

from ctcid.model.predict import load_model
from ctcid.model.train import train_backbone, tuned_train


def test_train_applies_the_best_trial_and_reuses_its_cross_validation(
    tuned: Tuned, synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    report = tuned.outcome.report
    assert report["best"]["values"]["learning_rate"] != tuned.params.train.learning_rate
    out = train_backbone(
        tuned.params,
        BACKBONE,
        stage_inputs(synthetic_stage_inputs),
        tmp_path / "models",
        tmp_path / "reports",
        show_progress=False,
        tuned=tuned.outcome.report_path,
    )
    client = MlflowClient(tuned.params.mlflow.tracking_uri)
    run = client.get_run(out.run_id)
    assert run.data.tags["tune.trial_run_id"] == report["best"]["mlflow_run_id"]
    assert run.data.tags["tune.trial_number"] == str(report["best"]["number"])
    assert children(client.search_runs([run.info.experiment_id]), out.run_id) == []  # no folds trained
    assert run.data.params["train.learning_rate"] == str(report["best"]["values"]["learning_rate"])
    assert run.data.params["train.negatives"] == report["best"]["values"]["negatives"]
    pd.testing.assert_frame_equal(pd.read_csv(out.oof_path), pd.read_csv(report["oof_file"]))
    assert out.cv.threshold == pytest.approx(report["best"]["cv"]["threshold"], abs=1e-5)
    assert out.cv.final_epochs == report["best"]["cv"]["final_epochs"]
    assert load_model(out.model_path).info.threshold == pytest.approx(out.cv.threshold)


def test_another_fixed_setting_changes_the_fingerprint_and_train_runs_its_own_folds(
    tuned: Tuned, synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    params = tuned.params.model_copy(update={"train": tuned.params.train.model_copy(update={"patience": 2})})
    out = train_backbone(
        params,
        BACKBONE,
        stage_inputs(synthetic_stage_inputs),
        tmp_path / "models",
        tmp_path / "reports",
        show_progress=False,
        tuned=tuned.outcome.report_path,
    )
    client = MlflowClient(params.mlflow.tracking_uri)
    run = client.get_run(out.run_id)
    assert "tune.trial_run_id" not in run.data.tags
    folds = children(client.search_runs([run.info.experiment_id]), out.run_id)
    assert len(folds) == 2 and all(f.info.status == "FINISHED" for f in folds)
    # still the best trial's values, with patience 2
    assert run.data.params["train.learning_rate"] == str(
        tuned.outcome.report["best"]["values"]["learning_rate"]
    )
    assert run.data.params["train.patience"] == "2"


def test_a_tune_reports_values_override_train_and_native_becomes_the_crop_size(tuned: Tuned) -> None:
    params = tuned.params
    report = {"best": {"values": {"learning_rate": 1e-3, "negatives": "resample", "input_size": "native"}}}
    config = tuned_train(params, report)
    assert (config.learning_rate, config.negatives) == (1e-3, "resample")
    assert config.input_size == params.segment.crop_size
    assert config.epochs == params.train.epochs  # the rest of train.* as given
    assert tuned_train(params, {"best": None}) == params.train  # a study without a complete trial
