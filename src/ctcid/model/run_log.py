"""Everything the train stage records in MLflow, in one place: the parent run, a child per fold.

One parent run per backbone x init holds the params, the CV summary, the final fit's loss curve and
the CV figures; each fold is a child run with its per-epoch curves. The training code calls the
hooks of :class:`TrainRunLog` and never MLflow itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from ctcid.config.mlflow import MlflowParams
from ctcid.model.count_threshold import CountChoice
from ctcid.model.cv import CVResult, FoldResult
from ctcid.model.trainer import EpochMetrics
from ctcid.plots import plot_confusion, plot_roc
from ctcid.tracking import (
    PARENT_TAG,
    log_artifacts,
    log_data_inputs,
    log_metrics,
    log_params,
    open_experiment,
    stage_tags,
    tracked_run,
)


class TrainRunLog:
    """The open parent run of one training; :meth:`start` opens it and ends it FINISHED or FAILED."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str, name: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.name = name

    @classmethod
    @contextmanager
    def start(cls, mlflow: MlflowParams, backbone: str, init: str) -> Iterator[TrainRunLog]:
        client, experiment_id = open_experiment(mlflow)
        name = f"{backbone}-{init}"
        tags = {**stage_tags("train", backbone), "init": init}
        with tracked_run(client, experiment_id, name, tags=tags) as run_id:
            log_data_inputs(client, run_id, "train")
            yield cls(client, experiment_id, run_id, name)

    def params(self, values: Mapping[str, Any]) -> None:
        log_params(self.client, self.run_id, values)

    def fold_logger(self) -> MlflowFoldLogger:
        return MlflowFoldLogger(self.client, self.experiment_id, self.run_id, self.name)

    def cv(self, cv: CVResult) -> None:
        log_metrics(
            self.client,
            self.run_id,
            {
                "cv": cv.mean,
                "cv_std": cv.std,
                "oof": cv.oof_metrics().as_dict(),
                "threshold": cv.threshold,
                "final_epochs": cv.final_epochs,
            },
        )

    def counting(self, choice: CountChoice) -> None:
        """The counting threshold and its out-of-fold per-patient count errors."""
        values = {
            "count_threshold": choice.threshold,
            "count_oof_mae": choice.mae,
            "count_oof_mae_at_half": choice.mae_at_half,
            "count_oof_mae_at_operating": choice.mae_at_operating,  # None: not logged
        }
        log_metrics(self.client, self.run_id, values)

    def tuned_by(self, report: Mapping[str, Any]) -> None:
        """Which study (and best trial) chose this run's values; nothing when untuned."""
        best = report.get("best") or {}
        tags = {"tune.study": report.get("study"), "tune.best_trial_number": best.get("number")}
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(self.run_id, key, str(value))

    def reused_cv(self, trial_run_id: str, trial_number: int) -> None:
        """The CV is the tuning trial's (same configuration and data): link to its run and folds."""
        self.client.set_tag(self.run_id, "tune.trial_run_id", trial_run_id)
        self.client.set_tag(self.run_id, "tune.trial_number", str(trial_number))
        self.client.set_tag(
            self.run_id,
            "mlflow.note.content",
            f"Cross-validation reused from tuning trial {trial_number} (run {trial_run_id}), "
            "which trained these folds with exactly this configuration; its fold runs are nested there.",
        )

    def artifact(self, path: Path, folder: str | None = None) -> None:
        log_artifacts(self.client, self.run_id, [path], folder)

    def final_epoch(self, metrics: EpochMetrics) -> None:
        log_metrics(self.client, self.run_id, {"final_train_loss": metrics.train_loss}, step=metrics.epoch)

    def cv_artifacts(self, cv: CVResult, oof_path: Path) -> None:
        """Out-of-fold ROC and confusion matrix figures, and the out-of-fold predictions table."""
        oof = cv.oof
        with tempfile.TemporaryDirectory() as tmp:
            roc = plot_roc(
                {f"{cv.backbone} out-of-fold": (oof["y_true"], oof["y_score"])},
                Path(tmp) / "cv_roc.png",
                title=f"{cv.backbone} cross-validation ROC",
            )
            confusion = plot_confusion(
                cv.oof_metrics(),
                Path(tmp) / "cv_confusion.png",
                title=f"{cv.backbone} out-of-fold, threshold {cv.threshold:.3g}",
            )
            log_artifacts(self.client, self.run_id, [roc, confusion], "plots")
        log_artifacts(self.client, self.run_id, [oof_path], "predictions")


class MlflowFoldLogger:
    """A :class:`ctcid.model.cv.FoldObserver`: one child run per fold, per-epoch metrics by step."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_id: str, name: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.name = name
        self._open: str | None = None

    def __enter__(self) -> MlflowFoldLogger:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._open is not None:  # a fold raised before it ended
            self.stop("FAILED" if exc_type else "KILLED")

    def stop(self, status: str) -> None:
        """End the open fold run early: KILLED when it was stopped on purpose (pruning), else FAILED."""
        if self._open is not None:
            self.client.set_terminated(self._open, status)
            self._open = None

    def fold_started(self, fold: int, train_size: int, val_size: int) -> None:
        self._open = self.client.create_run(
            self.experiment_id, tags={PARENT_TAG: self.parent_id}, run_name=f"{self.name}-fold{fold}"
        ).info.run_id
        log_params(self.client, self._open, {"fold": fold, "train_size": train_size, "val_size": val_size})
        log_data_inputs(self.client, self._open, "train")

    def epoch_ended(self, fold: int, metrics: EpochMetrics) -> None:
        if self._open is not None:
            log_metrics(
                self.client,
                self._open,
                {**metrics.as_dict(), "epoch_seconds": metrics.seconds},
                step=metrics.epoch,
            )

    def fold_ended(self, fold: int, result: FoldResult) -> None:
        if self._open is None:
            return
        # the best epoch's validation metrics at threshold 0.5, next to the per-epoch curves
        summary = {"best": result.metrics.as_dict(), "best_epoch": result.best_epoch}
        log_metrics(self.client, self._open, summary, step=result.best_epoch)
        self.client.set_terminated(self._open, "FINISHED")
        self._open = None
