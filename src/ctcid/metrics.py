"""Classification and per-patient counting metrics, with bootstrap confidence intervals.

Conventions (docs/evaluation.md): label 1 is CTC (positive); a cell is called CTC when its
score is ``>= threshold``. Undefined quantities are NaN, never an exception: AUC with a single
class in ``y_true``, sensitivity without positives, specificity without negatives. F1 without
any predicted or true positive is 0 (sklearn's ``zero_division=0``). Count agreement (Lin's CCC,
Bland-Altman limits) uses population moments for the CCC as Lin defines it and ``ddof=1`` for the
Bland-Altman SD as Bland and Altman do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import brier_score_loss, cohen_kappa_score, confusion_matrix, f1_score, roc_auc_score

METRIC_NAMES = ("auc", "sensitivity", "specificity", "accuracy", "f1")
PATIENT_INTERVAL_METRICS = ("mae", "bias", "ccc", "agreement_ge1", "agreement_ge5")


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
    return _percentile_intervals(draws, METRIC_NAMES, level)


def _percentile_intervals(
    draws: Mapping[str, np.ndarray], names: tuple[str, ...], level: float
) -> dict[str, tuple[float, float]]:
    """Central ``level`` percentile interval of each named metric's draws, NaN draws ignored."""
    tail = (1.0 - level) / 2.0 * 100.0
    intervals = {}
    for name in names:
        values = draws[name]
        if np.all(np.isnan(values)):
            intervals[name] = (math.nan, math.nan)
        else:
            low, high = np.nanpercentile(values, [tail, 100.0 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


def _ccc_rows(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Lin's CCC along the last axis (one value per row of 2-D draws), NaN where it is 0/0."""
    mean_t = true.mean(axis=-1, keepdims=True)
    mean_p = predicted.mean(axis=-1, keepdims=True)
    cov = np.mean((true - mean_t) * (predicted - mean_p), axis=-1)
    den = true.var(axis=-1) + predicted.var(axis=-1) + (mean_t - mean_p)[..., 0] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * cov / np.where(den > 0, den, 1.0), np.nan)


def lin_ccc(true, predicted) -> float:
    """Lin's concordance correlation coefficient (Biometrics 1989) of two paired series.

    2 cov / (var_t + var_p + (mean_t - mean_p)^2) with population (ddof=0) moments, as Lin defines
    it: unlike Pearson's r it drops below 1 for any offset or scale error, not only for scatter.
    NaN for fewer than 2 pairs, and when both series are one and the same constant (0/0); two
    different constants give 0.
    """
    true = np.asarray(true, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if true.shape != predicted.shape:
        raise ValueError(f"true has {true.size} values but predicted has {predicted.size}")
    if true.size < 2:
        return math.nan
    return float(_ccc_rows(true, predicted))


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement (Lancet 1986) of predicted against true values.

    ``bias`` is the mean of predicted - true (> 0: over-counting), ``sd`` its SD (ddof=1) and
    ``lower`` / ``upper`` the 95 % limits of agreement bias -/+ 1.96 sd. NaN SD and limits below 2
    pairs, everything NaN without pairs.
    """

    bias: float
    sd: float
    lower: float
    upper: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def bland_altman(true, predicted) -> BlandAltman:
    true = np.asarray(true, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if true.shape != predicted.shape:
        raise ValueError(f"true has {true.size} values but predicted has {predicted.size}")
    diff = predicted - true
    bias = float(diff.mean()) if diff.size else math.nan
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    return BlandAltman(bias=bias, sd=sd, lower=bias - 1.96 * sd, upper=bias + 1.96 * sd, n=int(diff.size))


@dataclass(frozen=True)
class PatientCounts:
    """Per-patient CTC counts from cell predictions against the true counts.

    ``agreement_geK`` is the share of patients where prediction and truth agree on
    "count >= K" (K = 1: any CTC; K = 5: the CellSearch-style prognostic cut-off);
    ``kappa_geK`` is Cohen's kappa of that call (NaN when both sides call every patient the same);
    ``sensitivity_geK`` / ``specificity_geK`` rate the patient-level call against the truth;
    ``ccc`` is Lin's concordance of the counts and ``loa_low`` / ``loa_high`` the Bland-Altman 95 %
    limits of agreement of predicted - true (see :func:`lin_ccc`, :func:`bland_altman`).
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
    # defaults keep any constructor written before these fields working
    ccc: float = math.nan
    loa_low: float = math.nan
    loa_high: float = math.nan

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
    limits = bland_altman(true, pred)
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
        ccc=lin_ccc(true, pred),
        loa_low=limits.lower,
        loa_high=limits.upper,
    )


def _patient_draws(true: np.ndarray, predicted: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Patient-level metrics on ``n_boot`` resamples of whole patients, vectorised over draws."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, true.size, size=(n_boot, true.size))
    t, p = true[index], predicted[index]
    draws = {
        "mae": np.abs(p - t).mean(axis=1),
        "bias": (p - t).mean(axis=1),
        "ccc": _ccc_rows(t, p) if true.size > 1 else np.full(n_boot, np.nan),
    }
    for cutoff in (1, 5):
        # as in _cutoff_call: both sides agree on "count >= cutoff"
        draws[f"agreement_ge{cutoff}"] = np.mean((t >= cutoff) == (p >= cutoff), axis=1)
    return draws


def patient_intervals(
    table: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of :data:`PATIENT_INTERVAL_METRICS` over patients.

    ``table`` is a :attr:`PatientCounts.table` (columns true_count, predicted_count). Patients,
    not cells, are resampled: cells of one patient share a slide and a stain, so the patient is
    the independent unit of a count. (nan, nan) for every metric when ``n_boot <= 0`` or the
    table is empty, and for a metric undefined on every draw (the CCC of one patient).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot <= 0 or len(table) == 0:
        return {name: (math.nan, math.nan) for name in PATIENT_INTERVAL_METRICS}
    true = table["true_count"].to_numpy(dtype=np.float64)
    predicted = table["predicted_count"].to_numpy(dtype=np.float64)
    draws = _patient_draws(true, predicted, n_boot, seed)
    return _percentile_intervals(draws, PATIENT_INTERVAL_METRICS, level)


CALIBRATION_COLUMNS = ("bin_low", "bin_high", "mean_predicted", "observed", "count")


@dataclass(frozen=True)
class Calibration:
    """Reliability of scores read as CTC probabilities.

    ``brier`` is the mean squared error of the score against the 0/1 label; ``ece`` the expected
    calibration error, sum over bins of count / n * |observed - mean_predicted|. ``bins`` holds one
    row per non-empty bin (columns :data:`CALIBRATION_COLUMNS`).
    """

    brier: float
    ece: float
    n: int
    bins: pd.DataFrame

    def as_dict(self) -> dict[str, float]:
        return {"brier": float(self.brier), "ece": float(self.ece), "n": float(self.n)}


def calibration(y_true, y_score, n_bins: int = 10) -> Calibration:
    """Brier score, ECE and a reliability table over ``n_bins`` equal-width bins of [0, 1].

    Bins are half-open [low, high) except the last, [low, 1], so a score of exactly 1 falls in the
    top bin; that is the edge convention of ``sklearn.calibration.calibration_curve``, which is not
    used because it does not return the bin counts. Scores must lie in [0, 1].
    """
    y_true, y_score = _as_arrays(y_true, y_score)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if not np.all((y_score >= 0.0) & (y_score <= 1.0)):  # NaN fails too
        raise ValueError("calibration needs scores in [0, 1]")
    if y_true.size == 0:
        empty = pd.DataFrame({name: pd.Series(dtype=np.float64) for name in CALIBRATION_COLUMNS})
        return Calibration(brier=math.nan, ece=math.nan, n=0, bins=empty)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(y_score, edges[1:-1])  # inner edges only: 1.0 lands in the last bin
    count = np.bincount(which, minlength=n_bins)
    filled = count > 0
    mean_predicted = np.bincount(which, weights=y_score, minlength=n_bins)[filled] / count[filled]
    observed = np.bincount(which, weights=y_true, minlength=n_bins)[filled] / count[filled]
    bins = pd.DataFrame(
        {
            "bin_low": edges[:-1][filled],
            "bin_high": edges[1:][filled],
            "mean_predicted": mean_predicted,
            "observed": observed,
            "count": count[filled],
        }
    )
    ece = float(np.sum(count[filled] / y_true.size * np.abs(observed - mean_predicted)))
    brier = float(brier_score_loss(y_true, y_score, labels=[0, 1]))
    return Calibration(brier=brier, ece=ece, n=int(y_true.size), bins=bins)


@dataclass(frozen=True)
class PrevalenceBehaviour:
    """Expected count error of a fixed threshold (its cell-level sensitivity and specificity).

    ``bias_per_1000`` maps a CTC prevalence among detections to the expected count error per 1000
    detections (> 0: over-counting); ``break_even`` is the prevalence where false positives and
    false negatives cancel out.
    """

    sensitivity: float
    specificity: float
    break_even: float
    bias_per_1000: dict[float, float]

    def as_dict(self) -> dict[str, float]:
        values = {
            "sensitivity": float(self.sensitivity),
            "specificity": float(self.specificity),
            "break_even": float(self.break_even),
        }
        for prevalence, bias in self.bias_per_1000.items():
            values[f"bias_per_1000_at_{prevalence:g}"] = float(bias)
        return values


def prevalence_behaviour(
    sensitivity: float, specificity: float, prevalences=(0.01, 0.05, 0.2, 0.5)
) -> PrevalenceBehaviour:
    """Whether a threshold over- or under-counts when a lab's patients have more or fewer CTCs.

    A threshold chosen at the training prevalence keeps its sensitivity and specificity elsewhere,
    but the count it yields does not stay unbiased: among N detections at CTC prevalence p the
    expected count is N (p sens + (1 - p)(1 - spec)), so the expected error per 1000 detections is
    1000 ((1 - p)(1 - spec) - p (1 - sens)). It is 0 at the break-even prevalence
    (1 - spec) / ((1 - spec) + (1 - sens)); below it false positives win (over-counting), above it
    missed CTCs do. Break-even is NaN for an error-free threshold or NaN inputs.
    """
    fp_rate = 1.0 - float(specificity)
    fn_rate = 1.0 - float(sensitivity)
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    bias = {}
    for prevalence in prevalences:
        if not 0.0 <= prevalence <= 1.0:
            raise ValueError(f"prevalences must lie in [0, 1], got {prevalence}")
        bias[float(prevalence)] = 1000.0 * ((1.0 - prevalence) * fp_rate - prevalence * fn_rate)
    return PrevalenceBehaviour(
        sensitivity=float(sensitivity),
        specificity=float(specificity),
        break_even=_ratio(fp_rate, fp_rate + fn_rate),
        bias_per_1000=bias,
    )
