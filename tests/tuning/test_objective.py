"""A trial's life in the objective: pruned by the pruner after a fold, or by the budget mid-fold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from tuning_support import BACKBONE, all_runs, children, stage_inputs, tune_params

from ctcid.config.loader import parse_params
from ctcid.metrics import binary_metrics
from ctcid.model.cv import OBJECTIVES, CVResult, FoldResult, cv_objective
from ctcid.tuning.run_log import RUN_ATTR
from ctcid.tuning.tune import tune_backbone


def fold_result(number: int, y_true: list[int], y_score: list[float]) -> FoldResult:
    true, score = np.array(y_true), np.array(y_score)
    return FoldResult(number, 1, binary_metrics(true, score, 0.5), (), np.arange(true.size), true, score)


def test_worst_fold_specificity_is_the_lowest_fold_at_the_pooled_threshold() -> None:
    folds = [
        fold_result(0, [1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]),
        fold_result(1, [1, 0, 0], [0.6, 0.65, 0.5]),
        fold_result(2, [1, 1], [0.95, 0.4]),  # no non-CTC cell: no specificity, skipped
    ]
    # pooled CTC scores 0.95 0.9 0.8 0.6 0.4: sensitivity 0.8 needs the 4th, threshold 0.6; there
    # the pooled non-CTC cells give 4 of 6 right, fold 0 3 of 4 (0.7 is a false positive), fold 1
    # 1 of 2 (0.65 is)
    assert cv_objective(folds, "specificity_at_sensitivity", 0.8) == pytest.approx(4 / 6)
    assert cv_objective(folds, "worst_fold_specificity", 0.8) == pytest.approx(0.5)
    # the running figure after fold 0 (what pruning compares): its own threshold 0.8, every negative below
    assert cv_objective(folds[:1], "worst_fold_specificity", 0.8) == 1.0
    assert math.isnan(cv_objective(folds[2:], "worst_fold_specificity", 0.8))
    result = CVResult("alexnet", "scratch", tuple(folds), 0.8)
    assert result.objective("worst_fold_specificity") == pytest.approx(0.5)
    assert set(result.summary()["objective"]) == set(OBJECTIVES)
    assert parse_params({"tune": {"objective": "worst_fold_specificity"}}).tune.objective in OBJECTIVES
    with pytest.raises(ValueError, match="worst_fold_specificity"):
        cv_objective(folds, "worst_site", 0.8)


def test_the_pruner_stops_a_hopeless_trial_after_its_first_fold(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    # trial 0 (learning rate 3e-4) reaches AUC 1 on fold 0; a trial must match it there to go on,
    # and the seeded sampler's first draw (about 8e-6) stays near AlexNet's random start
    params = tune_params(
        tmp_path,
        n_trials=3,
        objective="auc",
        pruner="percentile",
        pruner_percentile=1.0,
        pruner_startup_trials=1,
        space={"learning_rate": {"low": 1e-7, "high": 3e-4, "log": True}},
    )
    outcome = tune_backbone(params, BACKBONE, stage_inputs(synthetic_stage_inputs), tmp_path / "reports")
    study = optuna.load_study(study_name=outcome.report["study"], storage=params.tune.storage)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, [(t.number, t.state.name, t.intermediate_values) for t in study.trials]
    assert outcome.report["pruned_by"] == {"pruner": len(pruned)}
    assert outcome.report["trials"]["pruned"] == len(pruned)
    baseline_fold0 = study.trials[0].intermediate_values[0]
    client = MlflowClient(params.mlflow.tracking_uri)
    runs = all_runs(params)
    for trial in pruned:
        assert trial.user_attrs["stopped_by"] == "pruner"
        assert list(trial.intermediate_values) == [0]  # stopped after fold 0 of 2
        assert trial.intermediate_values[0] < baseline_fold0
        run = client.get_run(trial.user_attrs[RUN_ATTR])
        assert run.info.status == "KILLED"
        assert run.data.tags["optuna.state"] == "pruned"
        assert run.data.tags["optuna.stopped_by"] == "pruner"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "running_objective")] == [0]
        assert "objective" not in run.data.metrics
        assert client.list_artifacts(run.info.run_id, "cv") == []
        folds = children(runs, run.info.run_id)
        assert [(f.info.run_name, f.info.status) for f in folds] == [
            (f"tune-{BACKBONE}-trial{trial.number}-fold0", "FINISHED")
        ]
    assert outcome.report["best"]["number"] not in {t.number for t in pruned}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):  # the figure after the last fold
        assert trial.intermediate_values == {0: pytest.approx(baseline_fold0), 1: pytest.approx(trial.value)}
    assert outcome.report["trials"]["complete"] + len(pruned) == 3


def test_a_spent_budget_prunes_a_running_trial_but_never_the_studys_first_cross_validation(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    # the budget runs from the start of each call: spent before any trial's first epoch ends
    weights = tmp_path / "no-weights"
    weights.mkdir()
    space = {
        "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
        "init": {"choices": ["scratch", "pretrained", "registry"]},
    }
    params = tune_params(
        tmp_path, train={"weights_dir": str(weights)}, n_trials=3, timeout_s=0.01, space=space
    )
    inputs = stage_inputs(synthetic_stage_inputs)
    first = tune_backbone(params, BACKBONE, inputs, tmp_path / "reports")
    study = optuna.load_study(study_name=first.report["study"], storage=params.tune.storage)
    # the baseline's cross-validation runs to its end (train would run it anyway); then the budget
    # is spent and no further trial starts
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert first.report["best"]["number"] == 0 and first.report["pruned_by"] == {}

    second = tune_backbone(params, BACKBONE, inputs, tmp_path / "reports")
    report = second.report
    study = optuna.load_study(study_name=report["study"], storage=params.tune.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    trial = study.trials[1]
    assert trial.user_attrs["stopped_by"] == "budget"
    assert trial.intermediate_values == {}  # stopped mid-fold: nothing reported
    assert report["pruned_by"] == {"budget": 1} and report["trials"] == {"complete": 1, "pruned": 1}
    assert report["best"]["number"] == 0
    client = MlflowClient(params.mlflow.tracking_uri)
    run = client.get_run(trial.user_attrs[RUN_ATTR])
    assert (run.info.status, run.data.tags["optuna.state"]) == ("KILLED", "pruned")
    assert run.data.tags["optuna.stopped_by"] == "budget"
    assert client.get_metric_history(run.info.run_id, "running_objective") == []
    folds = children(all_runs(params), run.info.run_id)
    assert [(f.info.run_name, f.info.status) for f in folds] == [(f"tune-{BACKBONE}-trial1-fold0", "KILLED")]
    # no ImageNet weights and no champion here: init is searched over scratch alone, with notes
    assert report["space"]["init"]["choices"] == ["scratch"]
    assert {t.params["init"] for t in study.trials} == {"scratch"}
    notes = " | ".join(report["notes"])
    assert f"init pretrained left out of the search: no ImageNet weights file {weights}" in notes
    assert "init registry left out of the search" in notes


def test_enqueued_points_run_right_after_the_baseline(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    point = {"learning_rate": 0.001, "negatives": "class_weight"}
    params = tune_params(tmp_path, n_trials=2, enqueue=[point])
    outcome = tune_backbone(params, BACKBONE, stage_inputs(synthetic_stage_inputs), tmp_path / "reports")
    study = optuna.load_study(study_name=outcome.report["study"], storage=params.tune.storage)
    first, second = study.trials
    assert first.user_attrs.get("baseline") and not second.user_attrs.get("baseline")
    # train.* as given, with the point's changes
    assert second.user_attrs.get("enqueued") and second.params == {**first.params, **point}
