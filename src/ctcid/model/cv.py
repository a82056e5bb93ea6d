"""Stratified k-fold cross-validation of one backbone: the unit that training and tuning share.

``cross_validate`` trains one model per fold of the split (normalisation statistics from that
fold's training crops only) on the fold's crops that ``FitOptions.negatives`` asks for: the
balanced rows for ``downsample``, every row for ``class_weight`` and ``resample``. Early stopping
watches the fold's balanced validation rows; the best epoch then scores *every* training cell of
the fold's validation patients, so the pooled out-of-fold predictions carry the real class mix and
their specificity is measured on thousands of negatives, not on a down-sampled few hundred.
An Optuna objective calls it with modified :class:`FitOptions` and reads the :class:`CVResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from ctcid.metrics import METRIC_NAMES, BinaryMetrics, binary_metrics, threshold_for_sensitivity
from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import LabelledCrops, fit_normalisation
from ctcid.model.trainer import (
    EpochMetrics,
    FitOptions,
    FitResult,
    default_device,
    fit,
    score,
    seed_everything,
)
from ctcid.split import Fold

# What tuning maximises and model selection compares (tune.objective).
OBJECTIVES = ("specificity_at_sensitivity", "worst_fold_specificity", "auc")


class FoldObserver(Protocol):
    """Hooks around each fold: MLflow nested runs, Optuna reports and pruning."""

    def fold_started(self, fold: int, train_size: int, val_size: int) -> None: ...

    def epoch_ended(self, fold: int, metrics: EpochMetrics) -> None: ...

    def fold_ended(self, fold: int, result: FoldResult) -> None: ...


@dataclass(frozen=True)
class FoldResult:
    fold: int
    best_epoch: int
    metrics: BinaryMetrics  # every validation-patient cell, best epoch, threshold 0.5
    history: tuple[EpochMetrics, ...]
    crop_index: np.ndarray
    y_true: np.ndarray
    y_score: np.ndarray


# How out-of-fold scores are written (tune and train reports): 9 significant digits give a float32
# score back exactly, so a CV read back (train reusing the best trial's) picks the same threshold and
# objective as the one in memory; at 6 digits ties appeared and the objective moved.
OOF_FLOAT_FORMAT = "%.9g"


@dataclass(frozen=True)
class CVResult:
    backbone: str
    init: str
    folds: tuple[FoldResult, ...]
    target_sensitivity: float

    @property
    def oof(self) -> pd.DataFrame:
        """Out-of-fold predictions: crop_index, fold, y_true, y_score; sorted by crop_index."""
        table = pd.concat(
            [
                pd.DataFrame(
                    {"crop_index": f.crop_index, "fold": f.fold, "y_true": f.y_true, "y_score": f.y_score}
                )
                for f in self.folds
            ]
        )
        return table.sort_values("crop_index", kind="stable").reset_index(drop=True)

    @property
    def mean(self) -> dict[str, float]:
        """Mean over folds of each metric at threshold 0.5 (the paper's CV numbers)."""
        return {name: float(np.mean([getattr(f.metrics, name) for f in self.folds])) for name in METRIC_NAMES}

    @property
    def std(self) -> dict[str, float]:
        return {name: float(np.std([getattr(f.metrics, name) for f in self.folds])) for name in METRIC_NAMES}

    @property
    def auc(self) -> float:
        """Mean validation AUC over folds: the tie-break of model selection and tuning."""
        return self.mean["auc"]

    @property
    def threshold(self) -> float:
        """Highest threshold reaching ``target_sensitivity`` on the pooled out-of-fold predictions."""
        oof = self.oof
        return threshold_for_sensitivity(oof["y_true"], oof["y_score"], self.target_sensitivity)

    @property
    def final_epochs(self) -> int:
        """Epochs for the fit on all training crops: the median best epoch of the folds."""
        return max(1, math.ceil(float(np.median([f.best_epoch for f in self.folds]))))

    def oof_metrics(self) -> BinaryMetrics:
        oof = self.oof
        return binary_metrics(oof["y_true"], oof["y_score"], self.threshold)

    def objective(self, name: str) -> float:
        """The figure tuning maximises: see :func:`cv_objective`."""
        return cv_objective(self.folds, name, self.target_sensitivity)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the content of ``reports/train/<backbone>.json`` (DVC metrics)."""
        return {
            "backbone": self.backbone,
            "init": self.init,
            "n_folds": len(self.folds),
            "cv_mean": self.mean,
            "cv_std": self.std,
            "oof_at_threshold": self.oof_metrics().as_dict(),
            "threshold": self.threshold,
            "target_sensitivity": self.target_sensitivity,
            "objective": {name: self.objective(name) for name in OBJECTIVES},
            "final_epochs": self.final_epochs,
            "folds": {
                f"fold_{f.fold}": {**f.metrics.as_dict(), "best_epoch": f.best_epoch} for f in self.folds
            },
        }


# What a fit trains on, from the crops of its training patients and its seed: label-consistent
# counterfactuals appended (ctcid.model.counterfactual), or None for the crops as given.
ExtendCrops = Callable[[LabelledCrops, int], LabelledCrops]


def fold_training_rows(fold: Fold, negatives: str) -> np.ndarray:
    """The balanced rows for ``downsample``; every training row of the fold otherwise."""
    return fold.train if negatives == "downsample" else fold.train_all


def cross_validate(
    data: LabelledCrops,
    folds: Sequence[Fold],
    spec: ModelSpec,
    options: FitOptions,
    target_sensitivity: float,
    *,
    observer: FoldObserver | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    extend: ExtendCrops | None = None,
) -> CVResult:
    """Train and validate ``spec`` on every fold (crops.npy rows in ``folds``) of ``data``.

    ``data`` holds every training crop. Fold ``k`` is seeded with ``options.seed + k``, so folds
    differ and every run repeats.
    """
    results = []
    for number, fold in enumerate(folds):
        _, result = fit_fold(
            data, fold, number, len(folds), spec, options,
            observer=observer, device=device, show_progress=show_progress, extend=extend,
        )
        results.append(result)
    return CVResult(spec.backbone, spec.init, tuple(results), target_sensitivity)


def fit_fold(
    data: LabelledCrops,
    fold: Fold,
    number: int,
    n_folds: int,
    spec: ModelSpec,
    options: FitOptions,
    *,
    observer: FoldObserver | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    extend: ExtendCrops | None = None,
) -> tuple[FitResult, FoldResult]:
    """Fold ``number``: the fitted model (best epoch) and its scores of every validation-patient cell."""
    seed = options.seed + number
    device = device or default_device()
    train, val = data.subset(fold_training_rows(fold, options.negatives)), data.subset(fold.val)
    if extend is not None:
        train = extend(train, seed)
    if observer is not None:
        observer.fold_started(number, len(train), len(val))
    seed_everything(seed, options.deterministic, device)
    model = spec.build(fit_normalisation(train, device))

    def report(metrics: EpochMetrics) -> None:
        if observer is not None:
            observer.epoch_ended(number, metrics)

    fitted = fit(
        model,
        train,
        val,
        replace(options, seed=seed),
        on_epoch=report,
        device=device,
        description=f"{spec.backbone} fold {number + 1}/{n_folds}",
        show_progress=show_progress,
    )
    held_out = data.subset(fold.val_all)
    y_true = held_out.labels.numpy()
    y_score = score(fitted.model, held_out, options.batch_size, device)
    result = FoldResult(
        fold=number,
        best_epoch=fitted.best_epoch,
        metrics=binary_metrics(y_true, y_score, 0.5),
        history=tuple(fitted.history),
        crop_index=held_out.crop_index,
        y_true=y_true,
        y_score=y_score,
    )
    if observer is not None:
        observer.fold_ended(number, result)
    return fitted, result


def cv_objective(folds: Sequence[FoldResult], name: str, target_sensitivity: float) -> float:
    """``specificity_at_sensitivity``: specificity of the pooled out-of-fold predictions of ``folds``
    at the highest threshold reaching ``target_sensitivity`` (the operating point training will
    choose); ``worst_fold_specificity``: the lowest specificity of one fold's predictions at that
    same pooled threshold (folds without non-CTC cells skipped; NaN if none has any), with
    ``split.cv: sites`` the worst unseen site; ``auc``: the mean fold AUC. Over the first k folds
    it is the running figure that pruning compares after fold k.
    """
    if name == "auc":
        return float(np.mean([f.metrics.auc for f in folds]))
    if name not in ("specificity_at_sensitivity", "worst_fold_specificity"):
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    y_true = np.concatenate([f.y_true for f in folds])
    y_score = np.concatenate([f.y_score for f in folds])
    threshold = threshold_for_sensitivity(y_true, y_score, target_sensitivity)
    if name == "specificity_at_sensitivity":
        return binary_metrics(y_true, y_score, threshold).specificity
    per_fold = []
    for fold in folds:
        negative = np.asarray(fold.y_true) != 1
        if negative.any():  # a fold without non-CTC cells has no specificity
            per_fold.append(float(np.mean(np.asarray(fold.y_score)[negative] < threshold)))
    return min(per_fold) if per_fold else math.nan
