import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from sklearn.metrics import cohen_kappa_score

from ctcid.clinical import (
    CUTOFFS,
    ENDPOINT_NAMES,
    PREVALENCE_COLUMNS,
    PREVALENCE_GRID,
    CutoffCall,
    _cluster_bootstrap_draws,
    cluster_bootstrap_intervals,
    cutoff_call,
    limit_of_blank,
    mcnemar,
    paired_mae_difference,
    passing_bablok,
    patient_bootstrap_draws,
    patient_endpoint_intervals,
    patient_endpoints,
    predictive_values,
    prevalence_curve,
    repeatability,
)
from ctcid.metrics import METRIC_NAMES, binary_metrics, bootstrap_intervals

# Serum (x) and plasma (y) creatinine in mg/dL of 110 heart-surgery patients: data set ``creatinine`` of
# the R package mcr (CRAN), as listed in Rick Wicklin's program for "Passing-Bablok regression in SAS"
# (The DO Loop, 14 Feb 2022, https://blogs.sas.com/content/iml/2022/02/14/passing-bablok-regression-sas.html).
# "." is a missing value; mcreg(..., na.rm=TRUE) drops those two patients.
CREATININE = """
0.82 0.79  1.83 1.62  1.39 1.36  0.81 1.3   1.72 1.88  3.23 3.35  1.23 1.06  1.37 1.34  1.72 1.56  0.96 0.94
0.76 0.69  1.15 1.16  0.95 0.71  1 0.83     1.52 1.44  1.56 1.26  2.45 2.36  1.85 1.9   0.89 0.95  0.82 0.77
1.01 0.82  0.96 0.88  3.38 3.42  1.31 1.15  1.1 0.96   1.26 1.12  1.15 1.02  1.2 1.29   1.01 0.87  1.33 1.13
0.87 0.82  1.66 1.33  1.41 1.14  1.08 0.93  1.17 1.09  0.82 .     1.77 1.89  1.33 1.57  1.23 1.29  1.21 1.13
1.2 1.11   1.49 1.61  0.89 0.79  1.09 1.19  1.03 0.96  1.07 1.25  0.89 0.87  1.39 1.36  0.96 0.86  1.06 1.03
1.17 0.86  0.9 0.8    1.39 1.22  0.91 0.86  2.28 2.25  0.9 0.87   0.83 .     1.34 1.3   1.32 1.04  1.02 0.92
1.04 1.01  1.27 1.21  1.08 1.11  1.1 1.21   1.39 1.54  1.07 0.99  0.79 0.79  1.02 1.06  0.94 1.02  1.99 2.15
0.7 0.56   0.84 1.01  0.66 0.59  1.1 1.17   0.9 0.82   2.06 2.09  1.31 1.44  1.03 1.22  1.61 1.77  1.52 1.6
1.11 1.13  0.85 1.06  1.2 1.38   1.09 1.24  1.27 1.29  2.06 2.08  1.21 1.31  0.77 0.82  1.06 1.28  1.02 1.15
1 1.04     1.47 1.51  0.97 1.13  1.7 1.84   1.78 1.94  0.93 1.32  0.92 1.36  1.59 1.88  0.68 0.73  0.7 0.78
1.08 1.01  0.83 0.9   1.17 1.3   0.98 0.96  0.77 0.61  0.91 1.27  1.1 1.05   0.8 1.12   0.85 0.72  0.82 0.87
"""


def creatinine() -> tuple[np.ndarray, np.ndarray]:
    values = np.array([math.nan if v == "." else float(v) for v in CREATININE.split()]).reshape(-1, 2)
    assert len(values) == 110
    values = values[~np.isnan(values).any(axis=1)]
    return values[:, 0], values[:, 1]


def cohort(n: int = 60, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Realistic per-patient CTC counts: negative-binomial truth (many CTC-free patients, a long tail),
    a model that misses about 15 % of the CTCs and adds Poisson false positives."""
    rng = np.random.default_rng(seed)
    true = rng.negative_binomial(0.6, 0.12, size=n)
    predicted = rng.binomial(true, 0.85) + rng.poisson(0.4, size=n)
    return true, predicted


def clustered_cells(n_clusters: int, cells: int, spread: float, seed: int = 0):
    """Cells of ``n_clusters`` patients; one score offset per patient (its slide and stain) makes the
    errors of a patient's cells go together when ``spread`` is large."""
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(n_clusters), cells)
    y = (rng.random(clusters.size) < 0.3).astype(int)
    offset = rng.normal(0.0, spread, n_clusters)[clusters]
    score = 1 / (1 + np.exp(-(2.0 * y - 1.0 + offset + rng.normal(0, 1, clusters.size))))
    return y, np.round(score, 2), clusters  # rounded: many tied scores


# ----------------------------------------------------------------------------------------- cut-offs


def test_cutoff_call_on_a_hand_worked_two_by_two():
    """Hand-worked 2x2 at >= 5 CTCs, kappa as Cohen (Educ Psychol Meas 1960) defines it.

    truth >= 5 and call >= 5: (5,6) (8,5) (12,9) (6,7) TP; (5,3) (7,4) FN; (2,5) FP; (0,0) (1,2) (4,4) TN.
    po = 7/10; truth positive 6/10, call positive 5/10, so pe = 0.6 * 0.5 + 0.4 * 0.5 = 0.5 and
    kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    """
    true = [5, 8, 12, 6, 5, 7, 2, 0, 1, 4]
    predicted = [6, 5, 9, 7, 3, 4, 5, 0, 2, 4]
    call = cutoff_call(true, predicted, 5)
    assert (call.tp, call.fp, call.fn, call.tn) == (4, 1, 2, 3)
    assert call.sensitivity == pytest.approx(4 / 6)
    assert call.specificity == pytest.approx(3 / 4)
    assert call.ppv == pytest.approx(4 / 5)
    assert call.npv == pytest.approx(3 / 5)
    assert call.agreement == pytest.approx(7 / 10)
    assert call.kappa == pytest.approx(0.4)
    # at >= 1 only the CTC-free patient is negative, on both sides: perfect agreement
    assert cutoff_call(true, predicted, 1).kappa == pytest.approx(1.0)
    d = call.as_dict()
    assert set(d) == set(CutoffCall.__dataclass_fields__)
    assert all(type(v) is float for v in d.values())


def test_cutoff_call_kappa_is_nan_only_for_a_single_category():
    one_category = cutoff_call([0, 1, 2], [0, 2, 1], 5)  # everybody negative on both sides
    assert math.isnan(one_category.kappa)
    assert math.isnan(one_category.sensitivity) and math.isnan(one_category.ppv)
    assert one_category.specificity == 1.0
    # truth all positive, calls all negative: chance agreement 0, so kappa is 0, not undefined
    assert cutoff_call([5, 6], [0, 1], 5).kappa == pytest.approx(0.0)


def test_predictive_values_by_hand_at_two_prevalences():
    """Bayes by hand, se 0.9 and sp 0.8.

    p = 0.5: PPV = 0.45 / (0.45 + 0.10) = 0.8182, NPV = 0.40 / (0.40 + 0.05) = 0.8889.
    p = 0.1: PPV = 0.09 / (0.09 + 0.18) = 1/3,    NPV = 0.72 / (0.72 + 0.01) = 0.9863.
    """
    ppv, npv = predictive_values(0.9, 0.8, np.array([0.5, 0.1]))
    np.testing.assert_allclose(ppv, [0.45 / 0.55, 1 / 3])
    np.testing.assert_allclose(npv, [0.40 / 0.45, 0.72 / 0.73])
    # a test that never calls positive has no PPV (0/0), a perfect one NPV 1
    ppv, npv = predictive_values(0.0, 1.0, 0.3)
    assert math.isnan(float(ppv)) and float(npv) == pytest.approx(0.7 / 1.0)
    # broadcasting: 3 draws against the 99-point grid
    ppv, npv = predictive_values(np.array([[0.8], [0.9], [1.0]]), np.array([[0.9]] * 3), PREVALENCE_GRID)
    assert ppv.shape == npv.shape == (3, 99)
    assert np.all(np.diff(ppv, axis=1) > 0) and np.all(np.diff(npv[:2], axis=1) < 0)


# ------------------------------------------------------------------------------------ limit of blank


def test_limit_of_blank_by_the_ep17_rank_formula():
    """CLSI EP17-A2 non-parametric LoB, hand-worked for N = 20 blank (CTC-free) patients.

    Rank 0.5 + 0.95 * 20 = 19.5: the mean of the 19th (3) and 20th (5) ordered counts, LoB = 4.
    Patients with CTCs do not enter; 8 of the 20 blanks have a count >= 1.
    """
    blanks = [0] * 12 + [1] * 4 + [2, 2, 3, 5]
    rng = np.random.default_rng(0)
    order = rng.permutation(20)
    true = np.r_[np.zeros(20, int), [3, 8]]
    predicted = np.r_[np.array(blanks)[order], [50, 60]]
    lob = limit_of_blank(true, predicted)
    assert lob.lob == pytest.approx(4.0)
    assert lob.n_blank == 20
    assert lob.positive_share == pytest.approx(8 / 20)
    # N = 5: rank 0.5 + 4.75 = 5.25 lies above N, so the largest blank count
    assert limit_of_blank(np.zeros(5), [0, 0, 1, 0, 2]).lob == pytest.approx(2.0)


# ------------------------------------------------------------------------------------- Passing-Bablok


def test_passing_bablok_reproduces_mcr_on_its_creatinine_data():
    """Published: mcr's printSummary of mcreg(x, y, method.reg="PaBa", method.ci="analytical") on
    mcr's ``creatinine`` data, as quoted in Wicklin's program (URL at CREATININE):

        Intercept -0.1171729  LCI -0.2001149  UCI -0.020000
        Slope      1.0880089  LCI  1.0000000  UCI  1.173005

    The estimates match to the printed digits. For a limit mcr takes the tangent of the mean angle of the
    two slopes around the unrounded rank, where the original procedure rounds the rank: N = 5764 slopes,
    K = 463, C = 1.96 sqrt(108 * 107 * 221 / 18) = 738.26, M1 = round(2512.87) = 2513, M2 = 3252, so the
    upper slope limit is the (M2 + K) = 3715th sorted slope 1.1730769 (mcr: 1.173005, between the 3714th
    1.1729323 and it) and the lower intercept limit -0.2001923 (mcr: -0.2001149), both within 1e-4.
    """
    x, y = creatinine()
    fit = passing_bablok(x, y)
    assert fit.n == 108
    assert fit.slope == pytest.approx(1.0880089, abs=5e-8)
    assert fit.intercept == pytest.approx(-0.1171729, abs=5e-8)
    assert fit.slope_low == pytest.approx(1.0, abs=5e-8)
    assert fit.intercept_high == pytest.approx(-0.02, abs=5e-8)
    assert fit.slope_high == pytest.approx(1.173005, abs=1e-4)
    assert fit.intercept_low == pytest.approx(-0.2001149, abs=1e-4)
    # the original (rounded-rank) limits exactly
    assert fit.slope_high == pytest.approx(1.1730769, abs=5e-8)
    assert fit.intercept_low == pytest.approx(-0.2001923, abs=5e-8)


def test_passing_bablok_on_a_hand_worked_example_with_ties_and_vertical_pairs():
    """Hand-worked (no published example has all the special cases): n = 7 integer counts

        P1 (0,0)  P2 (1,1)  P3 (1,1)  P4 (1,3)  P5 (2,2)  P6 (3,0)  P7 (4,5)

    Pairwise slopes S_ij = (y_j - y_i) / (x_j - x_i), i < j:
        P1: P2 1, P3 1, P4 3, P5 1, P6 0, P7 5/4
        P2: P3 0/0 (identical, dropped), P4 +inf (vertical), P5 1, P6 -1/2, P7 4/3
        P3: P4 +inf, P5 1, P6 -1/2, P7 4/3
        P4: P5 -1 (dropped), P6 -3/2, P7 2/3
        P5: P6 -2, P7 3/2
        P6: P7 5
    N = 19 sorted: -2, -3/2, -1/2, -1/2, 0, 2/3, 1, 1, 1, 1, 1, 5/4, 4/3, 4/3, 3/2, 3, 5, +inf, +inf.
    K = 2 slopes below -1, so the slope is the (N + 1)/2 + K = 12th: 5/4 (the unshifted median is 1).
    C = 1.95996 sqrt(7 * 6 * 19 / 18) = 13.050, M1 = round((19 - 13.05) / 2) = round(2.975) = 3,
    M2 = 19 - 3 + 1 = 17: limits the 5th (0) and the 19th (+inf: unbounded, reported NaN).
    Intercept median(y - 1.25 x) = median(0, -1/4, -1/4, 7/4, -1/2, -15/4, 0) = -1/4;
    its upper limit median(y - 0 x) = median(0, 1, 1, 3, 2, 0, 5) = 1.
    """
    x = [0, 1, 1, 1, 2, 3, 4]
    y = [0, 1, 1, 3, 2, 0, 5]
    fit = passing_bablok(x, y)
    assert fit.slope == pytest.approx(1.25)
    assert fit.slope_low == pytest.approx(0.0)
    assert math.isnan(fit.slope_high)
    assert fit.intercept == pytest.approx(-0.25)
    assert fit.intercept_high == pytest.approx(1.0)
    assert math.isnan(fit.intercept_low)
    assert fit.n == 7


def test_passing_bablok_recovers_an_exact_line_through_tied_counts():
    x = np.array([0, 0, 1, 1, 2, 3, 3, 5, 8, 8, 13, 21] * 3)
    fit = passing_bablok(x, 2 * x + 1)
    assert (fit.slope, fit.slope_low, fit.slope_high) == pytest.approx((2.0, 2.0, 2.0))
    assert (fit.intercept, fit.intercept_low, fit.intercept_high) == pytest.approx((1.0, 1.0, 1.0))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "x, y",
    [
        ([], []),
        ([1, 2], [1, 2]),  # n < 3
        ([3, 3, 3, 3], [3, 3, 3, 3]),  # identical points: no slope at all
        ([0, 0, 0, 0], [0, 1, 2, 5]),  # all vertical: infinite slope
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # slopes of exactly -1 only
    ],
)
def test_passing_bablok_degenerate_input_is_nan(x, y):
    fit = passing_bablok(x, y)
    assert math.isnan(fit.slope) and math.isnan(fit.intercept)
    assert all(math.isnan(v) for k, v in fit.as_dict().items() if k != "n")


# -------------------------------------------------------------------------------------- repeatability


def test_repeatability_by_a_hand_worked_one_way_anova():
    """CLSI EP05-A3 repeatability, hand-worked: 3 specimens imaged 3 times (and one imaged once).

    A 2, 4, 6 (mean 4, SS 8); B 10, 12, 14 (mean 12, SS 8); C 0, 1, 2 (mean 1, SS 2).
    SS within = 18, df = N - k = 9 - 3 = 6, MS within = 3, SD = sqrt(3) = 1.7321, grand mean 51/9.
    95 % CI of the SD: chi-square table values chi2(0.975; 6) = 14.449 and chi2(0.025; 6) = 1.237,
    so sqrt(18 / 14.449) = 1.1161 to sqrt(18 / 1.237) = 3.814. Specimen D (one image) adds nothing.
    """
    specimens = ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["D"]
    counts = [2, 4, 6, 10, 12, 14, 0, 1, 2, 40]
    r = repeatability(specimens, counts)
    assert (r.n_specimens, r.n_images, r.df) == (3, 9, 6)
    assert r.sd == pytest.approx(math.sqrt(3))
    assert r.mean == pytest.approx(51 / 9)
    assert r.cv == pytest.approx(math.sqrt(3) / (51 / 9))
    assert chi2.ppf(0.975, 6) == pytest.approx(14.449, abs=5e-4)
    assert chi2.ppf(0.025, 6) == pytest.approx(1.2373, abs=5e-5)
    assert r.sd_low == pytest.approx(math.sqrt(18 / 14.449), rel=1e-4)
    assert r.sd_high == pytest.approx(math.sqrt(18 / 1.2373), rel=1e-4)
    # the specimen ids may be any hashable labels, in any order
    shuffled = np.random.default_rng(1).permutation(10)
    again = repeatability(np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 4])[shuffled], np.array(counts)[shuffled])
    assert again.as_dict() == pytest.approx(r.as_dict())


@pytest.mark.filterwarnings("error")
def test_repeatability_without_replicates_or_with_zero_counts():
    single = repeatability(["a", "b"], [3, 4])
    assert math.isnan(single.sd) and single.df == 0 and single.n_specimens == 0
    zeros = repeatability(["a", "a", "b", "b"], [0, 0, 0, 0])
    assert zeros.sd == 0.0 and zeros.mean == 0.0 and math.isnan(zeros.cv)
    assert (zeros.sd_low, zeros.sd_high) == (0.0, 0.0)


# --------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_on_agrestis_presidential_approval_table():
    """Agresti, Categorical Data Analysis (2nd ed., 2002), Table 10.1: approval of the president by 1600
    Americans in two surveys a month apart: 794 approve/approve, 150 approve -> disapprove,
    86 disapprove -> approve, 570 disapprove/disapprove. Agresti's McNemar z^2 = (86 - 150)^2 / 236 =
    17.36 (P < 0.001); with continuity correction (|150 - 86| - 1)^2 / 236 = 16.82.

    As cells: truth "approve" (1) everywhere, survey 1 as model A's calls, survey 2 as model B's.
    """
    calls_a = np.r_[np.ones(794), np.ones(150), np.zeros(86), np.zeros(570)].astype(int)
    calls_b = np.r_[np.ones(794), np.zeros(150), np.ones(86), np.zeros(570)].astype(int)
    result = mcnemar(np.ones(1600, int), calls_a, calls_b)
    assert (result.a_only, result.b_only) == (150, 86)
    uncorrected = (result.a_only - result.b_only) ** 2 / (result.a_only + result.b_only)
    assert uncorrected == pytest.approx(17.36, abs=5e-3)
    assert result.statistic == pytest.approx(63**2 / 236)
    assert result.statistic == pytest.approx(16.82, abs=5e-3)
    assert result.p_value < 0.001
    # swapping the models swaps the counts, not the test
    swapped = mcnemar(np.ones(1600, int), calls_b, calls_a)
    assert (swapped.a_only, swapped.b_only) == (86, 150)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_mcnemar_without_discordant_cells_and_with_scores():
    same = mcnemar([1, 0, 1], [1, 0, 0], [1, 0, 0])
    assert (same.a_only, same.b_only, same.p_value) == (0, 0, 1.0)
    assert math.isnan(same.statistic)
    # one discordant cell: exact p = 1 (P(X = 1 of 1) doubled, capped)
    assert mcnemar([1, 0], [1, 0], [0, 0]).p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0/1 calls"):
        mcnemar([1, 0], [0.7, 0.2], [1, 0])


# ----------------------------------------------------------------------------------- paired bootstrap


def test_paired_mae_difference_of_identical_models_is_zero():
    true, predicted = cohort()
    result = paired_mae_difference(true, predicted, predicted.copy(), n_boot=500, seed=0)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.p_value == 1.0
    assert result.n_patients == 60


def test_paired_mae_difference_detects_a_clearly_worse_model():
    true, good = cohort()
    rng = np.random.default_rng(3)
    bad = good + rng.poisson(3.0, size=true.size)  # A adds ~3 false CTCs per patient
    result = paired_mae_difference(true, bad, good, n_boot=1000, seed=0)
    assert result.difference > 1.0
    assert 0.0 < result.low <= result.difference <= result.high
    assert result.p_value < 0.01
    # the difference is MAE(A) - MAE(B) exactly
    assert result.difference == pytest.approx(np.mean(np.abs(bad - true)) - np.mean(np.abs(good - true)))
    reverse = paired_mae_difference(true, good, bad, n_boot=1000, seed=0)
    assert reverse.difference == pytest.approx(-result.difference) and reverse.high < 0


def test_paired_mae_difference_is_seeded():
    true, good = cohort()
    other = good + np.random.default_rng(5).integers(-2, 3, size=true.size)
    first = paired_mae_difference(true, other, good, n_boot=300, seed=11)
    assert paired_mae_difference(true, other, good, n_boot=300, seed=11) == first
    assert paired_mae_difference(true, other, good, n_boot=300, seed=12) != first
    none = paired_mae_difference(true, other, good, n_boot=0, seed=11)
    assert none.difference == first.difference and math.isnan(none.low) and math.isnan(none.p_value)


# ---------------------------------------------------------------------------------- cluster bootstrap


def test_cluster_draws_equal_the_metrics_of_the_resampled_cells():
    """Each draw equals binary_metrics on the cells of the clusters drawn (sklearn's AUC, ties included).

    Draw b takes clusters default_rng(seed).integers(0, n_clusters, size=(n_boot, n_clusters))[b]; the
    clusters are numbered in order of first appearance, so their labels are their indices here.
    """
    y, score, clusters = clustered_cells(12, 15, spread=1.0, seed=4)
    n_boot, seed = 25, 9
    draws = _cluster_bootstrap_draws(y, score, clusters, 0.5, n_boot, seed)
    index = np.random.default_rng(seed).integers(0, 12, size=(n_boot, 12))
    cells_of = [np.flatnonzero(clusters == c) for c in range(12)]
    for b in range(n_boot):
        cells = np.concatenate([cells_of[c] for c in index[b]])
        expected = binary_metrics(y[cells], score[cells], 0.5).as_dict()
        for name in METRIC_NAMES:
            assert draws[name][b] == pytest.approx(expected[name], nan_ok=True), (b, name)


def test_cluster_bootstrap_with_one_cell_per_cluster_behaves_like_a_cell_bootstrap():
    y, score, _ = clustered_cells(400, 1, spread=0.0, seed=2)
    point = binary_metrics(y, score, 0.5).as_dict()
    cluster = cluster_bootstrap_intervals(y, score, np.arange(y.size), 0.5, n_boot=400, seed=0)
    cell = bootstrap_intervals(y, score, 0.5, n_boot=400, seed=0)
    for name in METRIC_NAMES:
        low, high = cluster[name]
        assert low <= point[name] <= high, name
        # the stratified cell bootstrap fixes the class sizes, so it is a little narrower, not much
        assert high - low == pytest.approx(cell[name][1] - cell[name][0], rel=0.5), name


def test_cluster_bootstrap_is_wider_when_a_patients_cells_err_together():
    y, score, clusters = clustered_cells(40, 50, spread=2.0, seed=1)
    point = binary_metrics(y, score, 0.5).as_dict()
    cluster = cluster_bootstrap_intervals(y, score, clusters.astype(str), 0.5, n_boot=400, seed=0)
    cell = bootstrap_intervals(y, score, 0.5, n_boot=400, seed=0)
    for name in METRIC_NAMES:
        assert cluster[name][0] <= point[name] <= cluster[name][1], name
    for name in ("auc", "sensitivity", "specificity", "accuracy"):
        assert cluster[name][1] - cluster[name][0] > 1.5 * (cell[name][1] - cell[name][0]), name


@pytest.mark.filterwarnings("error")
def test_cluster_bootstrap_degenerate_and_moderately_large_inputs():
    y, score, clusters = clustered_cells(10, 5, spread=1.0)
    for n_boot in (0, -1):
        intervals = cluster_bootstrap_intervals(y, score, clusters, 0.5, n_boot=n_boot, seed=0)
        assert all(math.isnan(v) for pair in intervals.values() for v in pair)
    empty = cluster_bootstrap_intervals([], [], [], 0.5, n_boot=10, seed=0)
    assert all(math.isnan(v) for pair in empty.values() for v in pair)
    # one class only: AUC and sensitivity undefined on every draw
    negatives = cluster_bootstrap_intervals(np.zeros(50, int), score, clusters, 0.5, n_boot=20, seed=0)
    assert math.isnan(negatives["auc"][0]) and math.isnan(negatives["sensitivity"][1])
    assert not math.isnan(negatives["specificity"][0])
    with pytest.raises(ValueError, match="clusters"):
        cluster_bootstrap_intervals(y, score, clusters[:-1], 0.5, n_boot=10, seed=0)
    # 5000 cells of 100 patients, 200 draws (the 50k x 1000 case runs in chunks the same way)
    y, score, clusters = clustered_cells(100, 50, spread=1.0, seed=3)
    intervals = cluster_bootstrap_intervals(y, score, clusters, 0.5, n_boot=200, seed=0)
    assert all(0.0 <= low <= high <= 1.0 for low, high in intervals.values())


# ---------------------------------------------------------------------------------- patient endpoints


def test_patient_endpoints_are_flat_and_ordered():
    true, predicted = cohort()
    values = patient_endpoints(true, predicted)
    assert tuple(values) == ENDPOINT_NAMES
    assert all(type(v) is float for v in values.values())
    assert values["n_patients"] == 60.0
    assert values["mae"] == pytest.approx(np.mean(np.abs(predicted - true)))
    for cutoff in CUTOFFS:
        call = cutoff_call(true, predicted, cutoff)
        assert values[f"kappa_ge{cutoff}"] == call.kappa
        assert values[f"prevalence_ge{cutoff}"] == pytest.approx(np.mean(true >= cutoff))
    fit = passing_bablok(true, predicted)
    assert (values["pb_slope"], values["pb_intercept"]) == (fit.slope, fit.intercept)


def test_patient_draws_equal_the_endpoints_of_the_resampled_patients():
    """Draw b is patient_endpoints of patients default_rng(seed).integers(0, n, size=(n_boot, n))[b];
    this checks the vectorised kappa, LoB and Bland-Altman limits against the scalar ones."""
    true, predicted = cohort(n=25, seed=2)
    n_boot, seed = 30, 4
    draws = patient_bootstrap_draws(true, predicted, n_boot, seed)
    assert set(draws) == set(ENDPOINT_NAMES) - {"pb_slope", "pb_intercept", "n_patients"}
    index = np.random.default_rng(seed).integers(0, 25, size=(n_boot, 25))
    for b in range(n_boot):
        expected = patient_endpoints(true[index[b]], predicted[index[b]])
        for name, values in draws.items():
            assert values[b] == pytest.approx(expected[name], nan_ok=True), (b, name)
    # the kappa formula agrees with sklearn on draws with both categories
    t, p = true[index[0]] >= 3, predicted[index[0]] >= 3
    assert draws["kappa_ge3"][0] == pytest.approx(cohen_kappa_score(t, p))


def test_patient_endpoint_intervals_contain_the_point_estimates():
    true, predicted = cohort()
    values = patient_endpoints(true, predicted)
    intervals = patient_endpoint_intervals(true, predicted, n_boot=1000, seed=0)
    assert tuple(intervals) == ENDPOINT_NAMES
    for name in ENDPOINT_NAMES:
        low, high = intervals[name]
        if name == "n_patients":
            assert math.isnan(low) and math.isnan(high)
            continue
        assert not math.isnan(values[name]), name
        assert low - 1e-12 <= values[name] <= high + 1e-12, name
    fit = passing_bablok(true, predicted)
    assert intervals["pb_slope"] == (fit.slope_low, fit.slope_high)
    assert intervals["pb_intercept"] == (fit.intercept_low, fit.intercept_high)
    assert intervals == patient_endpoint_intervals(true, predicted, n_boot=1000, seed=0)


def test_patient_endpoint_intervals_without_draws_are_nan():
    true, predicted = cohort()
    for n_boot in (0, -5):
        intervals = patient_endpoint_intervals(true, predicted, n_boot=n_boot, seed=0)
        assert tuple(intervals) == ENDPOINT_NAMES
        assert all(math.isnan(v) for pair in intervals.values() for v in pair)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "true, predicted",
    [([], []), ([4], [3]), ([0] * 8, [0] * 8), ([0, 0, 0], [0, 2, 1])],
    ids=["empty", "single-patient", "all-zero", "blank-only"],
)
def test_degenerate_cohorts_give_nan_and_never_raise(true, predicted):
    values = patient_endpoints(true, predicted)
    assert tuple(values) == ENDPOINT_NAMES
    assert values["n_patients"] == float(len(true))
    intervals = patient_endpoint_intervals(true, predicted, n_boot=50, seed=0)
    assert tuple(intervals) == ENDPOINT_NAMES
    draws = patient_bootstrap_draws(true, predicted, n_boot=50, seed=0)
    assert all(v.shape == (50,) for v in draws.values())
    # Passing-Bablok needs two distinct true counts (else every slope is vertical or 0/0)
    assert math.isnan(values["pb_slope"]) and math.isnan(values["pb_intercept"])
    assert all(math.isnan(v) for v in intervals["pb_slope"] + intervals["pb_intercept"])
    # Lin's CCC is 0/0 when both sides are one and the same constant, 0 when only the truth is
    assert values["ccc"] == 0.0 if len(set(predicted)) > 1 else math.isnan(values["ccc"])
    if not true:
        assert all(math.isnan(v) for k, v in values.items() if k != "n_patients")
    if sum(true) == 0:  # no CTC-positive patient: sensitivity and PPV-at-truth undefined
        assert all(math.isnan(values[f"sensitivity_ge{c}"]) for c in CUTOFFS)
    se, sp = values["sensitivity_ge1"], values["specificity_ge1"]
    curve = prevalence_curve(se, sp, draws["sensitivity_ge1"], draws["specificity_ge1"])
    assert len(curve) == 99


# ---------------------------------------------------------------------------------- prevalence curve


def test_prevalence_curve_bands_from_paired_draws():
    true, predicted = cohort()
    values = patient_endpoints(true, predicted)
    draws = patient_bootstrap_draws(true, predicted, n_boot=1000, seed=0)
    se, sp = values["sensitivity_ge5"], values["specificity_ge5"]
    curve = prevalence_curve(se, sp, draws["sensitivity_ge5"], draws["specificity_ge5"])
    assert tuple(curve.columns) == PREVALENCE_COLUMNS
    np.testing.assert_allclose(curve["prevalence"], PREVALENCE_GRID)
    assert (PREVALENCE_GRID[0], PREVALENCE_GRID[-1], PREVALENCE_GRID.size) == (0.01, 0.99, 99)
    ppv, npv = predictive_values(se, sp, PREVALENCE_GRID)
    np.testing.assert_allclose(curve["ppv"], ppv)
    np.testing.assert_allclose(curve["npv"], npv)
    for name in ("ppv", "npv"):
        assert (curve[f"{name}_low"] <= curve[name] + 1e-12).all(), name
        assert (curve[name] <= curve[f"{name}_high"] + 1e-12).all(), name
    # the cohort's own prevalence gives back the cohort's PPV
    at_cohort = prevalence_curve(se, sp, prevalences=[values["prevalence_ge5"]])
    assert at_cohort["ppv"].iloc[0] == pytest.approx(values["ppv_ge5"])
    assert at_cohort[["ppv_low", "npv_high"]].isna().all().all()
    with pytest.raises(ValueError, match="both"):
        prevalence_curve(se, sp, sensitivity_draws=draws["sensitivity_ge5"])


def test_prevalence_curve_is_a_dataframe_even_without_values():
    nan_draws = np.full(5, np.nan)
    curve = prevalence_curve(math.nan, math.nan, nan_draws, nan_draws, prevalences=[0.1, 0.5])
    assert isinstance(curve, pd.DataFrame) and len(curve) == 2
    assert curve.drop(columns="prevalence").isna().all().all()
