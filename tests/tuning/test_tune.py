"""The tune stage in-process: the study, its report, out-of-fold predictions, figures and MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from tuning_support import BACKBONE, Tuned, all_runs, children, finished_trials, stage_inputs, tune_parents

from ctcid.split import read_split
from ctcid.tracking import PARENT_TAG
from ctcid.tuning.run_log import RUN_ATTR
from ctcid.tuning.tune import tune_backbone

N_FOLDS = 2


def study_of(tuned: Tuned) -> optuna.Study:
    return optuna.load_study(study_name=tuned.outcome.report["study"], storage=tuned.params.tune.storage)


def test_trial_0_is_the_untuned_baseline(tuned: Tuned) -> None:
    trial = study_of(tuned).trials[0]
    train = tuned.params.train
    assert trial.user_attrs["baseline"] is True
    assert trial.params == {"learning_rate": train.learning_rate, "negatives": train.negatives}
    assert not any(t.user_attrs.get("baseline") for t in study_of(tuned).trials[1:])
    baseline = tuned.outcome.report["baseline"]
    assert baseline["number"] == 0 and baseline["values"] == trial.params
    assert baseline["value"] == pytest.approx(trial.value)


def test_the_report_names_the_best_complete_trial_and_its_gain_over_the_baseline(tuned: Tuned) -> None:
    report = tuned.outcome.report
    study = study_of(tuned)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: (t.value, t.user_attrs["cv_auc"], -t.number))
    assert report["trials"] == {"complete": 3} and report["n_trials"] == 3
    assert report["study"].startswith(f"ctcid-{BACKBONE}-data") and "-cfg" in report["study"]
    assert report["best"]["number"] == best.number
    assert report["best"]["value"] == pytest.approx(best.value)
    assert report["best"]["cv_auc"] == pytest.approx(best.user_attrs["cv_auc"])
    assert report["best"]["values"] == best.params
    assert report["best"]["mlflow_run_id"] == best.user_attrs[RUN_ATTR]
    assert report["improvement"] == pytest.approx(best.value - study.trials[0].value)
    assert best.number != 0 and report["improvement"] > 0  # the untuned learning rate is a poor one
    assert len({t.value for t in complete}) == len(complete)  # no tie: the objective alone decides
    assert len(report["best"]["fingerprint"]) == 64
    assert report["best"]["cv"]["objective"][report["objective"]] == pytest.approx(best.value)
    assert report["space"]["negatives"]["choices"] == ["downsample", "class_weight"]
    assert json.loads(tuned.outcome.report_path.read_text()) == json.loads(json.dumps(report, default=str))
    assert tuned.outcome.report_path == tuned.reports / "tune" / f"{BACKBONE}.json"


def test_the_best_trials_out_of_fold_predictions_cover_each_training_cell_once(
    tuned: Tuned, synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    oof_path = tuned.reports / "tune" / f"{BACKBONE}_oof.csv"
    assert tuned.outcome.report["oof_file"] == str(oof_path)
    oof = pd.read_csv(oof_path)
    split = read_split(synthetic_stage_inputs["split"])
    assert sorted(oof["crop_index"]) == sorted(split.train.tolist())
    assert oof["crop_index"].is_unique
    assert set(oof["fold"]) == set(range(N_FOLDS))
    assert oof["y_score"].between(0, 1).all()
    # the same table the best trial's run holds
    client = MlflowClient(tuned.params.mlflow.tracking_uri)
    logged = client.download_artifacts(
        tuned.outcome.report["best"]["mlflow_run_id"], "cv/oof.csv", str(tmp_path)
    )
    pd.testing.assert_frame_equal(pd.read_csv(logged), oof)


def test_optunas_figures_are_written_and_logged(tuned: Tuned) -> None:
    folder = tuned.reports / "tune" / "figures" / BACKBONE
    html = folder / f"{BACKBONE}_figures.html"
    assert html.is_file()
    page = html.read_text()
    assert tuned.outcome.report["study"] in page and page.count("<script") >= 1
    assert (folder / f"{BACKBONE}_history.png").stat().st_size > 1000
    client = MlflowClient(tuned.params.mlflow.tracking_uri)
    parent = study_of(tuned).user_attrs[RUN_ATTR]
    logged = {Path(a.path).name for a in client.list_artifacts(parent, "figures")}
    assert {p.name for p in folder.iterdir()} <= logged and html.name in logged


def test_mlflow_holds_a_parent_run_with_a_child_per_trial_and_fold_runs_below(tuned: Tuned) -> None:
    study = study_of(tuned)
    runs = all_runs(tuned.params)
    parents = tune_parents(runs)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs[RUN_ATTR]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study"] == study.study_name
    assert parent.data.tags["backbone"] == BACKBONE
    trial_runs = {int(r.data.tags["optuna.trial_number"]): r for r in children(runs, parent.info.run_id)}
    assert sorted(trial_runs) == [t.number for t in study.trials]
    keys = {frozenset(r.data.params) for r in trial_runs.values()}
    assert len(keys) == 1 and {"learning_rate", "negatives", "epochs"} <= next(iter(keys))
    client = MlflowClient(tuned.params.mlflow.tracking_uri)
    for trial in study.trials:
        run = trial_runs[trial.number]
        assert run.info.run_id == trial.user_attrs[RUN_ATTR]
        assert run.info.run_name == f"tune-{BACKBONE}-trial{trial.number}"
        assert (run.info.status, run.data.tags["optuna.state"]) == ("FINISHED", "complete")
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        assert run.data.tags["tune.baseline"] == str(trial.number == 0).lower()
        history = sorted(
            client.get_metric_history(run.info.run_id, "running_objective"), key=lambda m: m.step
        )
        assert [m.step for m in history] == list(range(N_FOLDS))
        assert [m.value for m in history] == pytest.approx(
            [trial.intermediate_values[k] for k in range(N_FOLDS)]
        )
        assert history[-1].value == pytest.approx(trial.value)
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        folds = children(runs, run.info.run_id)
        assert sorted(f.info.run_name for f in folds) == [
            f"tune-{BACKBONE}-trial{trial.number}-fold{k}" for k in range(N_FOLDS)
        ]
        assert all(f.info.status == "FINISHED" for f in folds)
        assert {a.path for a in client.list_artifacts(run.info.run_id, "cv")} == {
            "cv/summary.json",
            "cv/oof.csv",
        }
    best = tuned.outcome.report["best"]["number"]
    tagged = [n for n, r in trial_runs.items() if r.data.tags.get("tune.best_trial") == "true"]
    assert tagged == [best]
    assert parent.data.tags["tune.best_trial_number"] == str(best)
    # every other run of the study hangs below the parent (train runs of other tests aside)
    roots = [r for r in runs if PARENT_TAG not in r.data.tags and r.data.tags.get("stage") != "train"]
    assert [r.info.run_id for r in roots] == [parent.info.run_id]


def test_a_second_call_runs_no_trial_and_logs_into_the_same_parent_run(
    tuned: Tuned, synthetic_stage_inputs: dict[str, Path]
) -> None:
    before = finished_trials(study_of(tuned))
    runs_before = {r.info.run_id for r in all_runs(tuned.params)}
    parent_id = study_of(tuned).user_attrs[RUN_ATTR]
    client = MlflowClient(tuned.params.mlflow.tracking_uri)
    summaries = len(client.get_metric_history(parent_id, "trials_complete"))
    again = tune_backbone(tuned.params, BACKBONE, stage_inputs(synthetic_stage_inputs), tuned.reports)
    study = study_of(tuned)
    assert finished_trials(study) == before
    assert len(study.trials) == 3
    runs = all_runs(tuned.params)
    assert {r.info.run_id for r in runs} == runs_before  # no new run: no trial, no second parent
    parent = tune_parents(runs)[0]
    assert parent.info.run_id == study.user_attrs[RUN_ATTR] == parent_id
    # the second call summed the study up again in the same run
    assert len(client.get_metric_history(parent_id, "trials_complete")) == summaries + 1
    assert again.report["best"] == tuned.outcome.report["best"]
    assert again.report["study"] == tuned.outcome.report["study"]
    assert parent.info.status == "FINISHED"
