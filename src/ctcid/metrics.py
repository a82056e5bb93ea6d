"""Classification and per-patient counting metrics, with bootstrap confidence intervals.

Conventions (docs/evaluation.md): label 1 is CTC (positive); a cell is called CTC when its
score is ``>= threshold``. Undefined quantities are NaN, never an exception: AUC with a single
class in ``y_true``, sensitivity without positives, specificity without negatives. F1 without
any predicted or true positive is 0 (sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, roc_auc_score

METRIC_NAMES = ("auc", "sensitivity", "specificity", "accuracy", "f1")


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one classifier at one threshold; counts from the confusion matrix."""

    auc: float
    sensitivity: float
    specificity: float
    accuracy: float
    f1: float
    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def _as_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_score has {y_score.size}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (non-CTC) and 1 (CTC)")
    return y_true, y_score


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def auc_score(y_true, y_score) -> float:
    """ROC AUC, NaN when ``y_true`` holds a single class (the AUC is undefined then)."""
    y_true, y_score = _as_arrays(y_true, y_score)
    if np.unique(y_true).size < 2:
        return math.nan
    return float(roc_auc_score(y_true, y_score))


def binary_metrics(y_true, y_score, threshold: float = 0.5) -> BinaryMetrics:
    y_true, y_score = _as_arrays(y_true, y_score)
    y_pred = (y_score >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel())
    return BinaryMetrics(
        auc=auc_score(y_true, y_score),
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, y_true.size),
        f1=float(f1_score(y_true, y_pred, labels=[0, 1], zero_division=0)),
        threshold=float(threshold),
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
    )


def threshold_for_sensitivity(y_true, y_score, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches ``target``.

    It is the k-th highest positive score with k = ceil(target * n_positives), at least 1. Pick it
    on cross-validation predictions and apply it unchanged to the test set.
    """
    y_true, y_score = _as_arrays(y_true, y_score)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target sensitivity must lie in [0, 1], got {target}")
    positives = np.sort(y_score[y_true == 1])[::-1]
    if positives.size == 0:
        raise ValueError("threshold_for_sensitivity needs at least one positive (CTC) label")
    # the small tolerance keeps 0.97 * 100 == 97.00000000000001 from asking for 98 cells
    k = min(max(1, math.ceil(target * positives.size - 1e-9)), positives.size)
    return float(positives[k - 1])


def prior_shift_threshold(prevalence: float, trained_prevalence: float = 0.5) -> float:
    """Score cut-off that makes the Bayes decision at the population's CTC ``prevalence``.

    A model trained on a balanced set (down-sampled or class-weighted: ``trained_prevalence`` 0.5)
    scores as if every other cell were a CTC. Counting CTCs among real detections, where about 5 %
    are CTCs, needs the posterior corrected for the prior (Saerens et al., Neural Comput. 2002):
    odds_true = odds_model * (pi / (1 - pi)) / (pi_b / (1 - pi_b)); calling a CTC when that
    posterior reaches 0.5 is ``score >= t`` with the ``t`` returned here (1 - pi for pi_b = 0.5).
    """
    if not 0.0 < prevalence < 1.0 or not 0.0 < trained_prevalence < 1.0:
        raise ValueError(f"prevalences must lie in (0, 1), got {prevalence} and {trained_prevalence}")
    ratio = (prevalence / (1.0 - prevalence)) / (trained_prevalence / (1.0 - trained_prevalence))
    return 1.0 / (1.0 + ratio)


def _bootstrap_draws(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """Metric values on ``n_boot`` stratified resamples (class sizes kept fixed), vectorised."""
    rng = np.random.default_rng(seed)
    pos = y_score[y_true == 1]
    neg = y_score[y_true == 0]
    n_pos, n_neg = pos.size, neg.size
    pos_draw = pos[rng.integers(0, n_pos, size=(n_boot, n_pos))] if n_pos else np.empty((n_boot, 0))
    neg_draw = neg[rng.integers(0, n_neg, size=(n_boot, n_neg))] if n_neg else np.empty((n_boot, 0))
    tp = (pos_draw >= threshold).sum(axis=1).astype(np.float64)
    fp = (neg_draw >= threshold).sum(axis=1).astype(np.float64)
    fn = n_pos - tp
    tn = n_neg - fp
    nan = np.full(n_boot, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_den = 2 * tp + fp + fn
        draws = {
            "sensitivity": tp / n_pos if n_pos else nan,
            "specificity": tn / n_neg if n_neg else nan,
            "accuracy": (tp + tn) / (n_pos + n_neg),
            "f1": np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), 0.0),
        }
    if n_pos and n_neg:
        # Mann-Whitney form of the AUC: mean rank of positives among all, ties counted half
        ranks = rankdata(np.concatenate([pos_draw, neg_draw], axis=1), axis=1)
        draws["auc"] = (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    else:
        draws["auc"] = nan
    return draws


def bootstrap_intervals(
    y_true, y_score, threshold: float, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for auc, sensitivity, specificity, accuracy and f1.

    Positives and negatives are resampled separately, each with its own size, so every resample
    has the class balance of the evaluated set (a CTC-poor test set never yields a resample
    without CTCs). An undefined metric gets (nan, nan); ``n_boot=0`` too.
    """
    y_true, y_score = _as_arrays(y_true, y_score)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot <= 0 or y_true.size == 0:
        return {name: (math.nan, math.nan) for name in METRIC_NAMES}
    draws = _bootstrap_draws(y_true, y_score, threshold, n_boot, seed)
    tail = (1.0 - level) / 2.0 * 100.0
    intervals = {}
    for name in METRIC_NAMES:
        values = draws[name]
        if np.all(np.isnan(values)):
            intervals[name] = (math.nan, math.nan)
        else:
            low, high = np.nanpercentile(values, [tail, 100.0 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


@dataclass(frozen=True)
class PatientCounts:
    """Per-patient CTC counts from cell predictions against the true counts.

    ``agreement_geK`` is the share of patients where prediction and truth agree on
    "count >= K" (K = 1: any CTC; K = 5: the CellSearch-style prognostic cut-off);
    ``kappa_geK`` is Cohen's kappa of that call (NaN when both sides call every patient the same);
    ``sensitivity_geK`` / ``specificity_geK`` rate the patient-level call against the truth.
    """

    table: pd.DataFrame  # columns: sample, true_count, predicted_count
    mae: float
    bias: float  # mean(predicted - true): > 0 means over-counting
    spearman: float
    agreement_ge1: float
    agreement_ge5: float
    kappa_ge1: float
    kappa_ge5: float
    sensitivity_ge1: float
    specificity_ge1: float
    sensitivity_ge5: float
    specificity_ge5: float

    @property
    def n_patients(self) -> int:
        return len(self.table)

    def as_dict(self) -> dict[str, float]:
        values = {key: float(value) for key, value in asdict(self).items() if key != "table"}
        values["n_patients"] = float(self.n_patients)
        return values


def _cutoff_call(true: np.ndarray, predicted: np.ndarray, cutoff: int) -> dict[str, float]:
    truth = true >= cutoff
    call = predicted >= cutoff
    if np.unique(np.concatenate([truth, call])).size < 2:
        kappa = math.nan  # one category only: chance agreement is 1, kappa is 0/0
    else:
        kappa = float(cohen_kappa_score(truth, call))
    return {
        "agreement": float(np.mean(truth == call)) if truth.size else math.nan,
        "kappa": kappa,
        "sensitivity": _ratio(np.sum(call & truth), np.sum(truth)),
        "specificity": _ratio(np.sum(~call & ~truth), np.sum(~truth)),
    }


def patient_counts(samples, y_pred, true_counts: Mapping[str, int]) -> PatientCounts:
    """Sum predicted CTC calls per sample and compare with the true per-sample counts.

    ``samples`` and ``y_pred`` run over the evaluated cells; ``true_counts`` names every patient to
    score (patients with no cell left get a predicted count of 0). The true count should come from
    the annotations, not from matched cells, so that cells missed by segmentation count as misses.
    """
    samples = np.asarray(samples).astype(str).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if samples.shape != y_pred.shape:
        raise ValueError(f"samples has {samples.size} values but y_pred has {y_pred.size}")
    truth = {str(k): int(v) for k, v in true_counts.items()}
    unknown = sorted(set(samples) - set(truth))
    if unknown:
        raise ValueError(f"true_counts lacks samples that have cells: {unknown[:5]}")
    predicted = pd.Series(y_pred, index=samples).groupby(level=0).sum()
    names = sorted(truth)
    table = pd.DataFrame(
        {
            "sample": names,
            "true_count": [truth[n] for n in names],
            "predicted_count": [int(predicted.get(n, 0)) for n in names],
        }
    )
    true = table["true_count"].to_numpy()
    pred = table["predicted_count"].to_numpy()
    ge1 = _cutoff_call(true, pred, 1)
    ge5 = _cutoff_call(true, pred, 5)
    if len(table) > 1 and np.ptp(true) > 0 and np.ptp(pred) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(spearmanr(true, pred).statistic)
    else:
        rho = math.nan
    empty = len(table) == 0
    return PatientCounts(
        table=table,
        mae=math.nan if empty else float(np.mean(np.abs(pred - true))),
        bias=math.nan if empty else float(np.mean(pred - true)),
        spearman=rho,
        agreement_ge1=ge1["agreement"],
        agreement_ge5=ge5["agreement"],
        kappa_ge1=ge1["kappa"],
        kappa_ge5=ge5["kappa"],
        sensitivity_ge1=ge1["sensitivity"],
        specificity_ge1=ge1["specificity"],
        sensitivity_ge5=ge5["sensitivity"],
        specificity_ge5=ge5["specificity"],
    )
