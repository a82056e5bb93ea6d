"""The Optuna objective: one trial = :func:`cross_validate` on the split's folds with sampled values.

After each fold the running CV figure (the objective over the folds done so far) is reported as
the trial's intermediate value at step = fold; the study's pruner then may stop a hopeless trial.
A trial still running when the backbone's budget (``tune.timeout_s``) is spent is stopped at the
end of its current epoch and recorded as pruned, so one ``ctcid tune`` overruns by at most an
epoch; a trial whose folds so far show that it cannot finish within the budget is stopped after
its first fold, leaving the time to trials that can. Neither happens while the study has no
complete trial yet: that first cross-validation (the baseline trial, normally) is the one
``train`` would run anyway, and without it nothing is tuned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import torch

from ctcid.config.train import TrainParams
from ctcid.config.tune import Dimension
from ctcid.contracts import open_crops
from ctcid.intensity import Levels
from ctcid.model.backbones import ModelSpec, spot_config
from ctcid.model.counterfactual import counterfactual_source
from ctcid.model.cv import ExtendCrops, FoldResult, cross_validate, cv_objective
from ctcid.model.dataset import LabelledCrops, load_labelled_crops
from ctcid.model.run_log import MlflowFoldLogger
from ctcid.model.train import read_size
from ctcid.model.trainer import EpochMetrics, FitOptions
from ctcid.split import Split
from ctcid.tuning.run_log import StudyRunLog
from ctcid.tuning.settings import TuneConfig
from ctcid.tuning.space import apply, suggest


class BudgetSpent(optuna.TrialPruned):
    """The backbone's tuning budget ran out during this trial."""


@dataclass
class TrialData:
    """Every training crop's label, facts and place in crops.npy, loaded once; pixels are read per batch."""

    crops: Path
    manifest: pd.DataFrame
    split: Split
    levels: Levels | None = None  # the crops' field levels when train.standardise (fixed, not searched)
    cd45_threshold: float | None = None  # segment.cd45_threshold: the crops' CellFacts (for hard negatives)
    _loaded: LabelledCrops | None = None

    def counterfactuals(self, params: TuneConfig, config: TrainParams) -> ExtendCrops | None:
        """A trial's counterfactual maker (``train.counterfactuals``), None when it asks for none."""
        return counterfactual_source(open_crops(self.crops), self.manifest, self.levels, params, config)

    def at(self, input_size: int) -> LabelledCrops:
        """The training crops read at ``input_size`` (a trial's; the memory does not depend on it)."""
        if self._loaded is None:
            split = self.split
            self._loaded = load_labelled_crops(
                self.crops, self.manifest, split.train, split.label_source, input_size, self.levels,
                self.cd45_threshold,
            )
        return self._loaded.resized(input_size)


@dataclass
class Objective:
    params: TuneConfig
    backbone: str
    space: dict[str, Dimension]
    data: TrialData
    log: StudyRunLog
    deadline: float  # time.monotonic() at which the budget is spent
    device: torch.device
    start_from: str | None = None  # the champion's model.pt for init: registry

    def __call__(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        config = apply(self.params.train, suggest(trial, self.space), self.params.segment.crop_size)
        spec = ModelSpec(
            self.backbone, config.init, read_size(config, self.params), config.weights_dir,
            self.start_from if config.init == "registry" else None, config.stem,
            spot_config(self.params.channels, self.params.segment, config.spot_features, config.input_size),
        )
        options = FitOptions.from_params(config, self.params.seed, self.params.channels)
        values = config.model_dump(exclude={"backbones", "bootstrap"})
        run_id = self.log.trial_started(trial, values, bool(trial.user_attrs.get("baseline")))
        objective = self.params.tune.objective
        watcher = FoldWatcher(
            trial, self.log, run_id, objective, config.target_sensitivity, self.deadline,
            n_folds=len(self.data.split.folds),
        )
        try:
            with self.log.fold_logger(run_id, trial.number) as folds:
                watcher.folds = folds
                cv = cross_validate(
                    self.data.at(read_size(config, self.params)), self.data.split.folds, spec, options,
                    config.target_sensitivity, observer=watcher, device=self.device, show_progress=False,
                    extend=self.data.counterfactuals(self.params, config),
                )
        except optuna.TrialPruned as stop:
            reason = "budget" if isinstance(stop, BudgetSpent) else "pruner"
            trial.set_user_attr("stopped_by", reason)
            self.log.trial_ended(run_id, "pruned", seconds=time.perf_counter() - started, reason=reason)
            raise
        except BaseException:
            self.log.trial_ended(run_id, "failed", seconds=time.perf_counter() - started)
            raise
        value = cv.objective(objective)
        trial.set_user_attr("cv_auc", cv.auc)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        self.log.trial_ended(run_id, "complete", cv, value, time.perf_counter() - started)
        return value


@dataclass
class FoldWatcher:
    """A fold observer: MLflow fold runs, the running figure per fold, pruning and the budget."""

    trial: optuna.Trial
    log: StudyRunLog
    run_id: str
    objective: str
    target_sensitivity: float
    deadline: float
    folds: MlflowFoldLogger | None = None
    done: list[FoldResult] = field(default_factory=list)
    n_folds: int = 0
    started: float = field(default_factory=time.monotonic)

    def fold_started(self, fold: int, train_size: int, val_size: int) -> None:
        if self.folds is not None:
            self.folds.fold_started(fold, train_size, val_size)

    def epoch_ended(self, fold: int, metrics: EpochMetrics) -> None:
        if self.folds is not None:
            self.folds.epoch_ended(fold, metrics)
        if time.monotonic() > self.deadline and self._study_has_a_result():
            self._stop_fold()
            raise BudgetSpent(f"tune.timeout_s spent in fold {fold}, epoch {metrics.epoch}")

    def _stop_fold(self) -> None:
        if self.folds is not None:
            self.folds.stop("KILLED")  # pruned, not failed

    def _study_has_a_result(self) -> bool:
        complete = self.trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return bool(complete)

    def fold_ended(self, fold: int, result: FoldResult) -> None:
        if self.folds is not None:
            self.folds.fold_ended(fold, result)
        self.done.append(result)
        running = cv_objective(self.done, self.objective, self.target_sensitivity)
        self.log.fold_figure(self.run_id, fold, running, result.metrics.auc)
        self.trial.report(running, fold)
        if self.trial.should_prune():
            self._stop_fold()
            raise optuna.TrialPruned(f"running {self.objective} {running:.4f} after fold {fold}")
        if self._cannot_finish(fold) and self._study_has_a_result():
            raise BudgetSpent(f"after fold {fold}, the remaining folds would run past tune.timeout_s")

    def _cannot_finish(self, fold: int) -> bool:
        per_fold = (time.monotonic() - self.started) / (fold + 1)
        return time.monotonic() + per_fold * (self.n_folds - fold - 1) > self.deadline
