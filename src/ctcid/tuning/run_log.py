"""Everything tuning records in MLflow: a parent run per study, a child per trial, folds below it.

* parent ``tune-<backbone>``: the study's name and storage, its space, the best trial (tags and
  metrics) and Optuna's figures (HTML and PNG). A resumed study or a second worker finds the
  parent through the study's ``mlflow_run_id`` attribute and logs into the same run;
* child ``tune-<backbone>-trial<N>``: the trial's complete ``train.*`` values under the same keys
  for every trial (so the UI compares them side by side), the running CV figure per fold as steps,
  the final state (FINISHED complete, KILLED pruned, FAILED failed; tag ``optuna.state``) and, for
  a complete trial, its CV summary and out-of-fold predictions (``cv/``);
* grandchildren: one run per fold with its epoch curves (:class:`MlflowFoldLogger`).

The client is driven directly, as in :mod:`ctcid.tracking`: optuna-integration's ``MLflowCallback``
is deprecated and flattens this nesting.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ctcid.config.mlflow import MlflowParams
from ctcid.model.cv import OOF_FLOAT_FORMAT, CVResult
from ctcid.model.run_log import MlflowFoldLogger
from ctcid.tracking import (
    PARENT_TAG,
    ending,
    log_artifacts,
    log_data_inputs,
    log_metrics,
    log_params,
    open_experiment,
    stage_tags,
)

RUN_ATTR = "mlflow_run_id"  # Optuna user attribute: the MLflow run of a study or trial
CV_FOLDER = "cv"
SUMMARY_FILE = "summary.json"
OOF_FILE = "oof.csv"
_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
_PARENT_WAIT_S = 10.0


class StudyRunLog:
    """The parent run of one backbone's study, shared by every worker and resumption."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str, backbone: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.backbone = backbone

    @classmethod
    @contextmanager
    def open(
        cls,
        mlflow: MlflowParams,
        study: optuna.Study,
        backbone: str,
        tags: Mapping[str, str],
        created: bool = True,
    ) -> Iterator[StudyRunLog]:
        """The study's parent run, created by the worker that created the study.

        Another worker opening a study that is still being set up waits a few seconds for that
        parent run; without the wait, two workers starting together would each create one.
        """
        client, experiment_id = open_experiment(mlflow)
        run_id = _parent_run(client, study, wait_s=0.0 if created else _PARENT_WAIT_S)
        if run_id is None:
            all_tags = {**stage_tags("tune", backbone), **tags, "optuna.study": study.study_name}
            run_id = client.create_run(experiment_id, tags=all_tags, run_name=f"tune-{backbone}").info.run_id
            log_data_inputs(client, run_id, "train")
            study.set_user_attr(RUN_ATTR, run_id)
        else:
            client.update_run(run_id, status="RUNNING")
        with ending(client, run_id):
            yield cls(client, experiment_id, run_id, backbone)

    def trial_started(self, trial: optuna.Trial, values: Mapping[str, Any], baseline: bool) -> str:
        # a retry of a killed trial inherits that trial's attributes, its run among them
        self._end_killed_run(trial.user_attrs.get(RUN_ATTR))
        tags = {
            PARENT_TAG: self.run_id,
            "backbone": self.backbone,
            "stage": "tune",
            "optuna.study": trial.study.study_name,
            "optuna.trial_number": str(trial.number),
            "optuna.state": "running",
            "tune.baseline": str(baseline).lower(),
        }
        name = f"tune-{self.backbone}-trial{trial.number}"
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        log_params(self.client, run_id, values)
        trial.set_user_attr(RUN_ATTR, run_id)
        return run_id

    def _end_killed_run(self, run_id: str | None) -> None:
        """End the runs a killed worker left RUNNING (the trial's and its open fold's): FAILED."""
        if not run_id or _existing_run(self.client, run_id) is None:
            return
        open_folds = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT_TAG}` = '{run_id}' and attributes.status = 'RUNNING'",
        )
        for fold in open_folds:
            self.client.set_terminated(fold.info.run_id, "FAILED")
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_tag(run_id, "optuna.state", "failed")
            self.client.set_terminated(run_id, "FAILED")

    def fold_logger(self, trial_run_id: str, trial_number: int) -> MlflowFoldLogger:
        return MlflowFoldLogger(
            self.client, self.experiment_id, trial_run_id, f"tune-{self.backbone}-trial{trial_number}"
        )

    def fold_figure(self, trial_run_id: str, fold: int, running: float, fold_auc: float) -> None:
        figures = {"running_objective": running, "fold_auc": fold_auc}
        log_metrics(self.client, trial_run_id, figures, step=fold)

    def trial_ended(
        self, trial_run_id: str, state: str, cv: CVResult | None = None, value: float | None = None,
        seconds: float | None = None, reason: str | None = None,
    ) -> None:
        """Record a trial's end; a complete one also logs its CV summary and out-of-fold predictions."""
        metrics: dict[str, Any] = {"trial_seconds": seconds}
        if value is not None:
            metrics["objective"] = value
        if cv is not None:
            metrics.update({"cv": cv.mean, "oof": cv.oof_metrics().as_dict(), "threshold": cv.threshold})
            with tempfile.TemporaryDirectory() as tmp:
                summary = Path(tmp) / SUMMARY_FILE
                summary.write_text(json.dumps(cv.summary(), indent=1) + "\n")
                oof = Path(tmp) / OOF_FILE
                cv.oof.to_csv(oof, index=False, float_format=OOF_FLOAT_FORMAT)
                log_artifacts(self.client, trial_run_id, [summary, oof], CV_FOLDER)
        log_metrics(self.client, trial_run_id, metrics)
        self.client.set_tag(trial_run_id, "optuna.state", state)
        if reason:
            self.client.set_tag(trial_run_id, "optuna.stopped_by", reason)
        self.client.set_terminated(trial_run_id, _STATUS[state])

    def study_finished(
        self, best: optuna.trial.FrozenTrial | None, counts: Mapping[str, int], figures: list[Path]
    ) -> None:
        log_metrics(self.client, self.run_id, {f"trials_{state}": n for state, n in counts.items()})
        if best is not None:
            best_run = best.user_attrs.get(RUN_ATTR)
            if best_run:
                self.client.set_tag(best_run, "tune.best_trial", "true")
            self.client.set_tag(self.run_id, "tune.best_trial_number", str(best.number))
            self.client.set_tag(self.run_id, "tune.best_trial_run_id", str(best_run))
            log_metrics(self.client, self.run_id, {"best_objective": best.value})
            for key, value in best.params.items():
                self.client.set_tag(self.run_id, f"tune.best.{key}", str(value))
        if figures:
            log_artifacts(self.client, self.run_id, figures, "figures")

    def download_cv(self, trial_run_id: str, folder: Path) -> tuple[dict[str, Any], Path]:
        """A complete trial's CV summary and the path of its out-of-fold predictions, from MLflow."""
        local = Path(self.client.download_artifacts(trial_run_id, CV_FOLDER, str(folder)))
        return json.loads((local / SUMMARY_FILE).read_text()), local / OOF_FILE


def _parent_run(client: MlflowClient, study: optuna.Study, wait_s: float) -> str | None:
    """The study's parent run, polling up to ``wait_s`` for another worker to record it."""
    deadline = time.monotonic() + wait_s
    while True:
        run_id = _existing_run(client, study.user_attrs.get(RUN_ATTR))
        if run_id is not None or time.monotonic() >= deadline:
            return run_id
        time.sleep(0.5)


def _existing_run(client: MlflowClient, run_id: str | None) -> str | None:
    """The study's parent run if this tracking store still holds it (a reset store does not)."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run_id if run.info.lifecycle_stage == "active" else None
