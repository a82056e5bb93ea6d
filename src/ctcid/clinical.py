"""Per-patient clinical endpoints (CLSI style) with patient-bootstrap intervals, and paired comparisons.

:mod:`ctcid.metrics` scores cells and counts; a clinical report asks what a count means for a patient:
is the patient called CTC-positive at the usual cut-offs (1, 3, 5 CTCs per sample), how often is a
CTC-free sample called positive (limit of blank, CLSI EP17-A2), does the count scale like the reference
(Passing-Bablok, CLSI EP09), how repeatable is the count of one specimen imaged again (CLSI EP05-A3),
and is one model better than another on the same patients or cells (paired bootstrap, McNemar).

Conventions follow :mod:`ctcid.metrics`: a count or score is called positive when it is ``>=`` the
cut-off; undefined quantities (no positives, one class, empty input) are NaN, never an exception; the
patient, not the cell, is the unit of resampling, because the cells of one patient share a slide and a
stain. Every bootstrap here draws its resamples with ``numpy.random.default_rng(seed).integers(0, n,
size=(n_boot, n))`` (in row chunks where memory asks for it, which yields the same numbers), so a
draw can be recomputed by hand.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2, norm
from sklearn.metrics import cohen_kappa_score

from ctcid.metrics import (
    METRIC_NAMES,
    _as_arrays,
    _ccc_rows,
    _percentile_intervals,
    _ratio,
    bland_altman,
    lin_ccc,
)

CUTOFFS = (1, 3, 5)  # clinical cut-offs, CTCs per sample
PREVALENCE_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)
LOB_LEVEL = 0.95  # EP17-A2: the limit of blank is the 95th percentile of blank results

_CUTOFF_STATS = ("sensitivity", "specificity", "ppv", "npv", "kappa", "prevalence")
ENDPOINT_NAMES: tuple[str, ...] = (
    "mae",
    "bias",
    "ccc",
    "ba_low",
    "ba_high",
    *(f"{stat}_ge{cutoff}" for cutoff in CUTOFFS for stat in _CUTOFF_STATS),
    "lob",
    "blank_positive_share",
    "pb_slope",
    "pb_intercept",
    "n_patients",
)
# the endpoints a patient bootstrap resamples; Passing-Bablok carries its own rank-based interval and
# the number of patients is fixed by design
_NOT_BOOTSTRAPPED = ("pb_slope", "pb_intercept", "n_patients")
_BOOTSTRAP_NAMES = tuple(name for name in ENDPOINT_NAMES if name not in _NOT_BOOTSTRAPPED)
# elements per (draws x cells) work array of the cluster bootstrap: 16 MB in float64 or int64; the
# handful alive at once gave a 50k-cell x 1000-draw call a traced peak of about 60 MB (2 s)
_CHUNK_ELEMENTS = 2_000_000


class _Flat:
    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _paired(a, b, names: tuple[str, str] = ("true", "predicted")) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has {a.size} values but {names[1]} has {b.size}")
    return a, b


def _divide(num, den) -> np.ndarray:
    """num / den elementwise, NaN where den is 0 (a rate without its reference population)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def _nanpercentile(values: np.ndarray, q, axis: int, method: str = "linear") -> np.ndarray:
    """np.nanpercentile without the all-NaN warning: an all-NaN slice is NaN, which is what we want."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(values, q, axis=axis, method=method)


# --------------------------------------------------------------------------------------------------
# the call at a cut-off


@dataclass(frozen=True)
class CutoffCall(_Flat):
    """A patient called positive when the predicted count is ``>= cutoff``, against truth ``>= cutoff``.

    Sensitivity and specificity rate the call against the truth; PPV and NPV are the predictive values
    at this cohort's prevalence (:func:`predictive_values` moves them to another). ``kappa`` is Cohen's
    kappa of the two calls, NaN when both sides put every patient in the same single category (chance
    agreement is then 1 and kappa 0/0); ``agreement`` is the share of patients called the same.
    """

    cutoff: int
    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    kappa: float
    agreement: float


def cutoff_call(true, predicted, cutoff: int) -> CutoffCall:
    true, predicted = _paired(true, predicted)
    truth = true >= cutoff
    call = predicted >= cutoff
    tp = int(np.sum(truth & call))
    fp = int(np.sum(~truth & call))
    fn = int(np.sum(truth & ~call))
    tn = int(np.sum(~truth & ~call))
    if np.unique(np.concatenate([truth, call])).size < 2:  # also empty input
        kappa = math.nan
    else:
        kappa = float(cohen_kappa_score(truth, call))
    return CutoffCall(
        cutoff=int(cutoff),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        kappa=kappa,
        agreement=_ratio(tp + tn, truth.size),
    )


def predictive_values(sensitivity, specificity, prevalence) -> tuple[np.ndarray, np.ndarray]:
    """PPV and NPV of a call with this sensitivity and specificity at another prevalence (Bayes).

    A study cohort's PPV and NPV hold only at its own share of CTC-positive patients; a clinic with
    fewer positives sees a lower PPV from the same test. PPV = se p / (se p + (1 - sp)(1 - p)),
    NPV = sp (1 - p) / (sp (1 - p) + (1 - se) p). The arguments broadcast against each other (draws
    against a prevalence grid); NaN where a value is 0/0, e.g. the PPV of a test that never calls
    positive.
    """
    se = np.asarray(sensitivity, dtype=np.float64)
    sp = np.asarray(specificity, dtype=np.float64)
    p = np.asarray(prevalence, dtype=np.float64)
    true_pos, false_pos = se * p, (1.0 - sp) * (1.0 - p)
    true_neg, false_neg = sp * (1.0 - p), (1.0 - se) * p
    return _divide(true_pos, true_pos + false_pos), _divide(true_neg, true_neg + false_neg)


# --------------------------------------------------------------------------------------------------
# limit of blank


@dataclass(frozen=True)
class LimitOfBlank(_Flat):
    """CLSI EP17-A2 limit of blank from the CTC-free patients (true count 0).

    ``lob`` is the non-parametric 95th percentile of their predicted counts: rank 0.5 + 0.95 N among the
    N ordered blank counts, interpolated linearly (numpy's ``method="hazen"``; a rank above N gives the
    largest count). It is the count a CTC-free sample stays at or below 95 % of the time, so a count
    above it is evidence of CTCs. ``positive_share`` is the share of CTC-free patients whose predicted
    count is at least 1: the false-positive rate of the "any CTC" call. NaN without blank patients.
    """

    lob: float
    n_blank: int
    positive_share: float


def limit_of_blank(true, predicted, level: float = LOB_LEVEL) -> LimitOfBlank:
    _check_level(level)
    true, predicted = _paired(true, predicted)
    blanks = predicted[true == 0]
    if blanks.size == 0:
        return LimitOfBlank(lob=math.nan, n_blank=0, positive_share=math.nan)
    return LimitOfBlank(
        lob=float(np.percentile(blanks, 100.0 * level, method="hazen")),
        n_blank=int(blanks.size),
        positive_share=float(np.mean(blanks >= 1)),
    )


# --------------------------------------------------------------------------------------------------
# Passing-Bablok method comparison


@dataclass(frozen=True)
class MethodFit(_Flat):
    """Passing-Bablok line predicted = intercept + slope * true with its rank-based confidence limits.

    A slope CI without 1 is a proportional error (the model counts a fixed share too many or too few),
    an intercept CI without 0 a constant one (e.g. debris counted in every sample). NaN for fewer than
    3 pairs, for degenerate input (every pair identical or vertical, or a shifted median out of range)
    and for a limit the data cannot give (too few slopes for the level, or an infinite slope).
    """

    slope: float
    slope_low: float
    slope_high: float
    intercept: float
    intercept_low: float
    intercept_high: float
    n: int


def _rank(sorted_slopes: np.ndarray, rank: int) -> float:
    """The ``rank``-th (1-based) sorted slope, NaN when out of range or infinite."""
    if not 1 <= rank <= sorted_slopes.size:
        return math.nan
    value = float(sorted_slopes[rank - 1])
    return value if math.isfinite(value) else math.nan


def _intercept(x: np.ndarray, y: np.ndarray, slope: float) -> float:
    return float(np.median(y - slope * x)) if math.isfinite(slope) else math.nan


def passing_bablok(x, y, level: float = 0.95) -> MethodFit:
    """Passing-Bablok regression (J Clin Chem Clin Biochem 1983; 21:709-720) of y on x.

    Least squares assumes an error-free x and is pulled by outliers; the reference count has its own
    error and CTC counts are skewed, so method comparison (CLSI EP09) uses this rank estimator. The
    procedure is the original one: pairwise slopes S_ij = (y_j - y_i) / (x_j - x_i) for i < j, dropping
    identical points (0/0) and slopes of exactly -1, keeping vertical pairs as -inf / +inf (they sort to
    the ends); K = the number of slopes below -1; the slope is the median of the N sorted slopes shifted
    up by K (which makes it symmetric in x and y). Its limits are the (M1 + K)-th and (M2 + K)-th sorted
    slopes, with C = z_{1-a/2} sqrt(n (n - 1)(2n + 5) / 18), M1 = (N - C) / 2 rounded half up and
    M2 = N - M1 + 1. The intercept is median(y - slope x), its limits median(y - slope_high x) and
    median(y - slope_low x). Integer counts tie often; ties only add equal slopes and need no care
    beyond the 0/0 and vertical pairs. R's mcr (``method.ci="analytical"``) averages the two slopes
    around the unrounded rank instead, so its limits can differ in the last digits.
    """
    _check_level(level)
    x, y = _paired(x, y, ("x", "y"))
    n = int(x.size)
    nan = math.nan
    undefined = MethodFit(nan, nan, nan, nan, nan, nan, n)
    if n < 3:
        return undefined
    i, j = np.triu_indices(n, k=1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    distinct = (dx != 0) | (dy != 0)
    dx, dy = dx[distinct], dy[distinct]
    vertical = dx == 0
    slopes = np.where(vertical, np.copysign(np.inf, dy), dy / np.where(vertical, 1.0, dx))
    slopes = np.sort(slopes[slopes != -1.0])
    n_slopes = int(slopes.size)
    if n_slopes == 0:
        return undefined
    k = int(np.sum(slopes < -1.0))
    if n_slopes % 2:
        slope = _rank(slopes, (n_slopes + 1) // 2 + k)
    else:
        slope = 0.5 * (_rank(slopes, n_slopes // 2 + k) + _rank(slopes, n_slopes // 2 + k + 1))
    if not math.isfinite(slope):
        return undefined
    c = norm.ppf(0.5 + level / 2.0) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    m1 = math.floor((n_slopes - c) / 2.0 + 0.5)
    m2 = n_slopes - m1 + 1
    if m1 < 1:  # the level asks for a rank below the smallest slope
        slope_low = slope_high = nan
    else:
        slope_low, slope_high = _rank(slopes, m1 + k), _rank(slopes, m2 + k)
    return MethodFit(
        slope=slope,
        slope_low=slope_low,
        slope_high=slope_high,
        intercept=_intercept(x, y, slope),
        intercept_low=_intercept(x, y, slope_high),
        intercept_high=_intercept(x, y, slope_low),
        n=n,
    )


# --------------------------------------------------------------------------------------------------
# repeatability


@dataclass(frozen=True)
class Repeatability(_Flat):
    """Repeatability (within-specimen precision, CLSI EP05-A3) of the count of one specimen imaged again.

    ``sd`` is the square root of the one-way ANOVA mean square within specimens (the pooled
    within-specimen variance), with df = N - k for N images of k specimens; ``sd_low`` / ``sd_high``
    its chi-square interval sd sqrt(df / chi2_{1-a/2, df}), sd sqrt(df / chi2_{a/2, df}). ``mean`` is the
    grand mean count and ``cv`` = sd / mean (NaN at mean 0). Only specimens with at least two images
    count (a single image says nothing about repeatability), in N, k and the mean alike.
    """

    sd: float
    sd_low: float
    sd_high: float
    mean: float
    cv: float
    n_specimens: int
    n_images: int
    df: int


def repeatability(specimens, counts, level: float = 0.95) -> Repeatability:
    _check_level(level)
    specimens = np.asarray(specimens).ravel()
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if specimens.shape != counts.shape:
        raise ValueError(f"specimens has {specimens.size} values but counts has {counts.size}")
    codes, _ = pd.factorize(specimens, use_na_sentinel=False)
    sizes = np.bincount(codes, minlength=0)
    replicated = sizes >= 2
    keep = replicated[codes] if codes.size else np.zeros(0, dtype=bool)
    n_specimens, n_images = int(replicated.sum()), int(keep.sum())
    df = n_images - n_specimens
    nan = math.nan
    if df <= 0:
        return Repeatability(nan, nan, nan, nan, nan, n_specimens, n_images, max(df, 0))
    means = np.bincount(codes, weights=counts) / np.maximum(sizes, 1)
    within = float(np.sum((counts[keep] - means[codes[keep]]) ** 2))
    sd = math.sqrt(within / df)
    alpha = 1.0 - level
    mean = float(counts[keep].mean())
    return Repeatability(
        sd=sd,
        sd_low=sd * math.sqrt(df / chi2.ppf(1.0 - alpha / 2.0, df)),
        sd_high=sd * math.sqrt(df / chi2.ppf(alpha / 2.0, df)),
        mean=mean,
        cv=_ratio(sd, mean),
        n_specimens=n_specimens,
        n_images=n_images,
        df=df,
    )


# --------------------------------------------------------------------------------------------------
# paired comparisons of two models


@dataclass(frozen=True)
class McNemar(_Flat):
    """McNemar's test of two classifiers' calls on the same cells (paired, so not two proportions).

    Only the discordant cells carry information: ``a_only`` cells A calls right and B wrong, ``b_only``
    the reverse. ``statistic`` is the continuity-corrected chi-square (|a_only - b_only| - 1)^2 /
    (a_only + b_only), NaN without discordant cells; ``p_value`` the exact two-sided binomial p of
    a_only among the discordant cells at 1/2 (exact, so right for few discordant cells too), 1.0
    without discordant cells.
    """

    a_only: int
    b_only: int
    statistic: float
    p_value: float


def mcnemar(y_true, calls_a, calls_b) -> McNemar:
    y_true, calls_a = _as_arrays(y_true, calls_a)
    _, calls_b = _as_arrays(y_true, calls_b)
    for name, calls in (("calls_a", calls_a), ("calls_b", calls_b)):
        if not np.isin(calls, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 calls, not scores")
    right_a, right_b = calls_a == y_true, calls_b == y_true
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    discordant = a_only + b_only
    if discordant == 0:
        return McNemar(a_only=a_only, b_only=b_only, statistic=math.nan, p_value=1.0)
    return McNemar(
        a_only=a_only,
        b_only=b_only,
        statistic=(abs(a_only - b_only) - 1) ** 2 / discordant,
        p_value=float(binomtest(a_only, discordant, 0.5).pvalue),
    )


@dataclass(frozen=True)
class PairedDifference(_Flat):
    """MAE of model A minus MAE of model B on the same patients (< 0: A counts closer to the truth).

    Both models are scored on every resample of patients, so patient-to-patient difficulty cancels
    out; two separate intervals that overlap say much less. ``low`` / ``high`` are the percentile
    bootstrap interval, ``p_value`` the two-sided bootstrap p 2 min(share of draws <= 0, share >= 0),
    at most 1.
    """

    difference: float
    low: float
    high: float
    p_value: float
    n_patients: int


def paired_mae_difference(
    true, predicted_a, predicted_b, n_boot: int, seed: int, level: float = 0.95
) -> PairedDifference:
    _check_level(level)
    true, predicted_a = _paired(true, predicted_a, ("true", "predicted_a"))
    _, predicted_b = _paired(true, predicted_b, ("true", "predicted_b"))
    n = int(true.size)
    gap = np.abs(predicted_a - true) - np.abs(predicted_b - true)  # per patient
    difference = float(gap.mean()) if n else math.nan
    if n_boot <= 0 or n == 0:
        return PairedDifference(difference, math.nan, math.nan, math.nan, n)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    draws = gap[index].mean(axis=1)
    low, high = _percentile_intervals({"difference": draws}, ("difference",), level)["difference"]
    p_value = min(1.0, 2.0 * min(float(np.mean(draws <= 0)), float(np.mean(draws >= 0))))
    return PairedDifference(difference, low, high, p_value, n)


# --------------------------------------------------------------------------------------------------
# cell metrics with patients as the resampling unit


def _cluster_bootstrap_draws(
    y_true: np.ndarray, y_score: np.ndarray, codes: np.ndarray, threshold: float, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """:data:`METRIC_NAMES` on ``n_boot`` resamples of whole clusters, vectorised over draws in chunks.

    A draw is a multiplicity per cluster (how often it was drawn). Confusion counts are per-cluster
    sums times the multiplicities. The AUC is the weighted Mann-Whitney statistic: each positive cell
    weighs its cluster's multiplicity and scores the summed weight of the negatives below it plus half
    of those tied with it, over (total positive weight) x (total negative weight); the negatives are
    sorted once and each positive's place among them found once, so a draw costs one cumulative sum.
    """
    n_clusters = int(codes.max()) + 1
    call = y_score >= threshold
    pos = y_true == 1
    sums = {
        name: np.bincount(codes, weights=(mask).astype(np.float64), minlength=n_clusters)
        for name, mask in (("tp", pos & call), ("fp", ~pos & call), ("fn", pos & ~call), ("tn", ~pos & ~call))
    }
    order = np.argsort(y_score[~pos], kind="stable")
    neg_scores, neg_codes = y_score[~pos][order], codes[~pos][order]
    pos_scores, pos_codes = y_score[pos], codes[pos]
    below = np.searchsorted(neg_scores, pos_scores, side="left")  # negatives strictly below
    upto = np.searchsorted(neg_scores, pos_scores, side="right")  # ... and tied with it
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n_clusters, y_true.size))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        index = rng.integers(0, n_clusters, size=(rows, n_clusters))
        flat = (index + n_clusters * np.arange(rows)[:, None]).ravel()
        multiplicity = np.bincount(flat, minlength=rows * n_clusters).reshape(rows, n_clusters)
        del index, flat
        tp, fp, fn, tn = (multiplicity @ sums[name] for name in ("tp", "fp", "fn", "tn"))
        f1_den = 2 * tp + fp + fn
        parts["sensitivity"].append(_divide(tp, tp + fn))
        parts["specificity"].append(_divide(tn, tn + fp))
        parts["accuracy"].append(_divide(tp + tn, tp + fp + fn + tn))
        parts["f1"].append(np.where(f1_den > 0, _divide(2 * tp, f1_den), 0.0))
        neg_weight = np.zeros((rows, neg_codes.size + 1), dtype=np.int64)
        np.cumsum(multiplicity[:, neg_codes], axis=1, out=neg_weight[:, 1:])
        pos_weight = multiplicity[:, pos_codes]
        # twice the numerator keeps the tie halves in exact integers
        beaten = neg_weight[:, below]
        beaten += neg_weight[:, upto]
        beaten *= pos_weight
        twice = beaten.sum(axis=1)
        del beaten
        parts["auc"].append(_divide(0.5 * twice, pos_weight.sum(axis=1) * neg_weight[:, -1]))
    return {name: np.concatenate(values) for name, values in parts.items()}


def cluster_bootstrap_intervals(
    y_true, y_score, clusters, threshold: float, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of :data:`METRIC_NAMES` resampling whole clusters (patients).

    :func:`ctcid.metrics.bootstrap_intervals` resamples cells as if independent, but the cells of one
    patient share a slide, a stain and a segmentation, so their errors go together and a cell bootstrap
    is too narrow. Here clusters are drawn with replacement and bring all their cells; the number of
    cells and the class balance vary between draws as they would between cohorts. An undefined metric
    on every draw gets (nan, nan); ``n_boot <= 0`` or no cells too.
    """
    y_true, y_score = _as_arrays(y_true, y_score)
    _check_level(level)
    clusters = np.asarray(clusters).ravel()
    if clusters.shape != y_true.shape:
        raise ValueError(f"y_true has {y_true.size} values but clusters has {clusters.size}")
    if n_boot <= 0 or y_true.size == 0:
        return {name: (math.nan, math.nan) for name in METRIC_NAMES}
    codes, _ = pd.factorize(clusters, use_na_sentinel=False)
    draws = _cluster_bootstrap_draws(y_true, y_score, codes, threshold, n_boot, seed)
    return _percentile_intervals(draws, METRIC_NAMES, level)


# --------------------------------------------------------------------------------------------------
# per-patient endpoints


def patient_endpoints(true, predicted) -> dict[str, float]:
    """Every :data:`ENDPOINT_NAMES` value of the predicted against the true per-patient counts.

    mae and bias (mean predicted - true) of the counts, Lin's ccc, the Bland-Altman 95 % limits
    ba_low / ba_high, at each cut-off of :data:`CUTOFFS` the call's sensitivity, specificity, PPV, NPV,
    kappa (:func:`cutoff_call`) and prevalence (share of patients truly at or above it), the limit of
    blank and blank positive share (:func:`limit_of_blank`), the Passing-Bablok slope and intercept
    (:func:`passing_bablok`, true count as x) and the number of patients. NaN where undefined.
    """
    true, predicted = _paired(true, predicted)
    n = int(true.size)
    limits = bland_altman(true, predicted)
    values = {
        "mae": float(np.mean(np.abs(predicted - true))) if n else math.nan,
        "bias": limits.bias,
        "ccc": lin_ccc(true, predicted),
        "ba_low": limits.lower,
        "ba_high": limits.upper,
    }
    for cutoff in CUTOFFS:
        call = cutoff_call(true, predicted, cutoff)
        values[f"sensitivity_ge{cutoff}"] = call.sensitivity
        values[f"specificity_ge{cutoff}"] = call.specificity
        values[f"ppv_ge{cutoff}"] = call.ppv
        values[f"npv_ge{cutoff}"] = call.npv
        values[f"kappa_ge{cutoff}"] = call.kappa
        values[f"prevalence_ge{cutoff}"] = _ratio(call.tp + call.fn, n)
    blank = limit_of_blank(true, predicted)
    fit = passing_bablok(true, predicted)
    values.update(
        lob=blank.lob,
        blank_positive_share=blank.positive_share,
        pb_slope=fit.slope,
        pb_intercept=fit.intercept,
        n_patients=float(n),
    )
    return {name: float(values[name]) for name in ENDPOINT_NAMES}


def _cutoff_draws(t: np.ndarray, p: np.ndarray, cutoff: int) -> dict[str, np.ndarray]:
    """The cut-off statistics of every row (draw), kappa by (po - pe) / (1 - pe) in exact integers."""
    truth, call = t >= cutoff, p >= cutoff
    tp = np.sum(truth & call, axis=1)
    fp = np.sum(~truth & call, axis=1)
    fn = np.sum(truth & ~call, axis=1)
    tn = np.sum(~truth & ~call, axis=1)
    n = tp + fp + fn + tn
    chance = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)  # pe * n^2
    return {
        "sensitivity": _divide(tp, tp + fn),
        "specificity": _divide(tn, tn + fp),
        "ppv": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
        "kappa": _divide(n * (tp + tn) - chance, n * n - chance),
        "prevalence": _divide(tp + fn, n),
    }


def patient_bootstrap_draws(true, predicted, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """The per-draw values behind :func:`patient_endpoint_intervals`, one array of ``n_boot`` each.

    Keys are the endpoints a patient bootstrap resamples: :data:`ENDPOINT_NAMES` less pb_slope,
    pb_intercept and n_patients. Draw b is :func:`patient_endpoints` of the patients
    ``default_rng(seed).integers(0, n, size=(n_boot, n))[b]``, computed for all draws at once; keeping
    the draws lets :func:`prevalence_curve` band PPV and NPV with paired sensitivity and specificity.
    """
    true, predicted = _paired(true, predicted)
    n, n_boot = int(true.size), max(int(n_boot), 0)
    if n == 0:
        return {name: np.full(n_boot, np.nan) for name in _BOOTSTRAP_NAMES}
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    t, p = true[index], predicted[index]
    diff = p - t
    bias = diff.mean(axis=1)
    spread = 1.96 * diff.std(axis=1, ddof=1) if n > 1 else np.full(n_boot, np.nan)
    draws = {
        "mae": np.abs(diff).mean(axis=1),
        "bias": bias,
        "ccc": _ccc_rows(t, p) if n > 1 else np.full(n_boot, np.nan),
        "ba_low": bias - spread,
        "ba_high": bias + spread,
    }
    for cutoff in CUTOFFS:
        for stat, values in _cutoff_draws(t, p, cutoff).items():
            draws[f"{stat}_ge{cutoff}"] = values
    blank = t == 0
    draws["lob"] = _nanpercentile(np.where(blank, p, np.nan), 100.0 * LOB_LEVEL, axis=1, method="hazen")
    draws["blank_positive_share"] = _divide(np.sum(blank & (p >= 1), axis=1), blank.sum(axis=1))
    return {name: draws[name] for name in _BOOTSTRAP_NAMES}


def patient_endpoint_intervals(
    true,
    predicted,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    draws: Mapping[str, np.ndarray] | None = None,
) -> dict[str, tuple[float, float]]:
    """An interval for every :data:`ENDPOINT_NAMES` key: percentile bootstrap over patients.

    Patients are resampled whole (see :func:`patient_bootstrap_draws`). pb_slope and pb_intercept
    take Passing-Bablok's own rank-based limits instead (:func:`passing_bablok` at ``level``), which
    do not need a bootstrap; n_patients is fixed by design and gets (nan, nan). A metric undefined on
    every draw gets (nan, nan); every interval is (nan, nan) for ``n_boot <= 0`` or no patients.
    ``draws``: :func:`patient_bootstrap_draws` of the same arguments, when the caller has them.
    """
    _check_level(level)
    true, predicted = _paired(true, predicted)
    if n_boot <= 0 or true.size == 0:
        return {name: (math.nan, math.nan) for name in ENDPOINT_NAMES}
    if draws is None:
        draws = patient_bootstrap_draws(true, predicted, n_boot, seed)
    intervals = _percentile_intervals(draws, _BOOTSTRAP_NAMES, level)
    fit = passing_bablok(true, predicted, level)
    intervals["pb_slope"] = (fit.slope_low, fit.slope_high)
    intervals["pb_intercept"] = (fit.intercept_low, fit.intercept_high)
    intervals["n_patients"] = (math.nan, math.nan)
    return {name: intervals[name] for name in ENDPOINT_NAMES}


PREVALENCE_COLUMNS = ("prevalence", "ppv", "npv", "ppv_low", "ppv_high", "npv_low", "npv_high")


def prevalence_curve(
    sensitivity: float,
    specificity: float,
    sensitivity_draws=None,
    specificity_draws=None,
    prevalences=PREVALENCE_GRID,
    level: float = 0.95,
) -> pd.DataFrame:
    """PPV and NPV of one cut-off's call across prevalences, banded by bootstrap draws.

    A reader's clinic rarely has the study's share of CTC-positive patients; this table gives the
    predictive values (:func:`predictive_values`) at each prevalence. ``sensitivity_draws`` and
    ``specificity_draws`` are paired bootstrap draws at the same cut-off (e.g.
    ``patient_bootstrap_draws(...)["sensitivity_ge5"]`` and ``["specificity_ge5"]``): draw b's pair
    gives one PPV curve, and the band is the central ``level`` percentile of those curves at each
    prevalence, NaN draws ignored. Without draws the band columns are NaN. Columns:
    :data:`PREVALENCE_COLUMNS`.
    """
    _check_level(level)
    grid = np.asarray(prevalences, dtype=np.float64).ravel()
    ppv, npv = predictive_values(sensitivity, specificity, grid)
    band = np.full((4, grid.size), np.nan)
    if sensitivity_draws is not None or specificity_draws is not None:
        if sensitivity_draws is None or specificity_draws is None:
            raise ValueError("give both sensitivity_draws and specificity_draws, or neither")
        se, sp = _paired(sensitivity_draws, specificity_draws, ("sensitivity_draws", "specificity_draws"))
        if se.size:
            ppv_draws, npv_draws = predictive_values(se[:, None], sp[:, None], grid[None, :])
            tail = (1.0 - level) / 2.0 * 100.0
            band[:2] = _nanpercentile(ppv_draws, [tail, 100.0 - tail], axis=0)
            band[2:] = _nanpercentile(npv_draws, [tail, 100.0 - tail], axis=0)
    return pd.DataFrame(
        {
            "prevalence": grid,
            "ppv": ppv,
            "npv": npv,
            "ppv_low": band[0],
            "ppv_high": band[1],
            "npv_low": band[2],
            "npv_high": band[3],
        }
    )
