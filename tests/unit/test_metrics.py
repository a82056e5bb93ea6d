import math

import numpy as np
import pandas as pd
import pytest

from ctcid.metrics import (
    PATIENT_INTERVAL_METRICS,
    BinaryMetrics,
    binary_metrics,
    bland_altman,
    bootstrap_intervals,
    calibration,
    lin_ccc,
    patient_counts,
    patient_intervals,
    prevalence_behaviour,
    threshold_for_sensitivity,
)


def scored(n_pos: int, n_neg: int, seed: int = 0, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
    return y, 1 / (1 + np.exp(-s))


def test_binary_metrics_against_a_hand_computed_confusion_matrix():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_score = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.1, 0.05]
    m = binary_metrics(y_true, y_score, threshold=0.5)
    # predicted positive: 0.9, 0.8, 0.6 (TP) and 0.7 (FP); 0.3 is a FN
    assert (m.tn, m.fp, m.fn, m.tp) == (5, 1, 1, 3)
    assert m.sensitivity == pytest.approx(3 / 4)
    assert m.specificity == pytest.approx(5 / 6)
    assert m.accuracy == pytest.approx(8 / 10)
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # AUC by pair counting: positives beat negatives in 21 of 24 pairs (0.6 < 0.7, 0.3 < 0.7, 0.4)
    assert m.auc == pytest.approx(21 / 24)
    assert m.threshold == 0.5


def test_threshold_is_inclusive_and_as_dict_is_flat():
    m = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert (m.tp, m.tn) == (1, 1)
    d = m.as_dict()
    assert set(d) == {f for f in BinaryMetrics.__dataclass_fields__}
    assert all(isinstance(v, float) for v in d.values())


def test_single_class_gives_nan_auc_and_undefined_rates():
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(m.auc)
    assert math.isnan(m.sensitivity)
    assert m.specificity == pytest.approx(2 / 3)
    assert m.f1 == 0.0


def test_mismatched_lengths_and_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="values"):
        binary_metrics([0, 1], [0.2])
    with pytest.raises(ValueError, match="only 0"):
        binary_metrics([0, 2], [0.2, 0.3])


@pytest.mark.parametrize("target", [0.5, 0.9, 0.97, 1.0])
def test_threshold_for_sensitivity_reaches_the_target(target):
    y, s = scored(100, 400)
    threshold = threshold_for_sensitivity(y, s, target)
    assert binary_metrics(y, s, threshold).sensitivity >= target
    # the highest such threshold: any higher score loses a true positive
    above = np.min(s[s > threshold]) if np.any(s > threshold) else None
    if above is not None:
        assert binary_metrics(y, s, above).sensitivity < target


def test_threshold_for_sensitivity_exact_multiple():
    y = np.r_[np.ones(100, int), np.zeros(10, int)]
    s = np.r_[np.linspace(1.0, 0.01, 100), np.zeros(10)]
    # 0.97 * 100 must ask for 97 positives, not 98 from floating-point round-up
    assert threshold_for_sensitivity(y, s, 0.97) == pytest.approx(s[96])
    with pytest.raises(ValueError, match="positive"):
        threshold_for_sensitivity(np.zeros(5, int), np.ones(5), 0.9)


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_n():
    y, s = scored(60, 600, seed=1)
    point = binary_metrics(y, s, 0.5)
    small = bootstrap_intervals(y, s, 0.5, n_boot=400, seed=0)
    for name, (low, high) in small.items():
        assert low <= getattr(point, name) <= high, name
    y_big, s_big = scored(600, 6000, seed=1)
    big = bootstrap_intervals(y_big, s_big, 0.5, n_boot=400, seed=0)
    for name in small:
        assert big[name][1] - big[name][0] < small[name][1] - small[name][0], name


@pytest.mark.parametrize("tied", [False, True])
def test_bootstrap_auc_centres_on_sklearn_auc(tied):
    # tied: 0/1 scores like the rule baseline, where ties must count half as in sklearn
    y, s = scored(50, 200, seed=3)
    if tied:
        s = (s >= 0.6).astype(float)
    intervals = bootstrap_intervals(y, s, 0.5, n_boot=2000, seed=1, level=0.5)
    auc = binary_metrics(y, s).auc
    low, high = intervals["auc"]
    assert low < auc < high
    assert abs((low + high) / 2 - auc) < 0.01


def test_bootstrap_is_seeded_and_handles_a_single_class():
    y, s = scored(30, 300)
    assert bootstrap_intervals(y, s, 0.5, 200, seed=4) == bootstrap_intervals(y, s, 0.5, 200, seed=4)
    one = bootstrap_intervals(np.zeros(10, int), np.linspace(0, 1, 10), 0.5, 100, seed=0)
    assert all(math.isnan(v) for v in one["auc"] + one["sensitivity"])
    assert not math.isnan(one["specificity"][0])
    none = bootstrap_intervals(y, s, 0.5, 0, seed=0)
    assert all(math.isnan(v) for pair in none.values() for v in pair)


def test_patient_counts_on_a_small_hand_example():
    samples = ["A"] * 4 + ["B"] * 3 + ["C"] * 8
    y_pred = [1, 1, 0, 0] + [0, 0, 0] + [1] * 6 + [0, 0]
    true = {"A": 3, "B": 0, "C": 7, "D": 1}  # D: a patient whose cells were all lost
    counts = patient_counts(samples, y_pred, true)
    table = counts.table.set_index("sample")
    assert table["predicted_count"].to_dict() == {"A": 2, "B": 0, "C": 6, "D": 0}
    assert counts.mae == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert counts.bias == pytest.approx(-3 / 4)
    # >= 1: truth A, C, D positive; predicted A, C: agree on A, B, C, miss D
    assert counts.agreement_ge1 == pytest.approx(3 / 4)
    assert counts.sensitivity_ge1 == pytest.approx(2 / 3)
    assert counts.specificity_ge1 == pytest.approx(1.0)
    # >= 5: truth C, predicted C
    assert counts.agreement_ge5 == 1.0
    assert counts.kappa_ge5 == pytest.approx(1.0)
    # kappa at 1: po = 0.75, pe = 0.75*0.5 + 0.25*0.5 = 0.5 -> 0.5
    assert counts.kappa_ge1 == pytest.approx(0.5)
    assert counts.n_patients == 4
    assert counts.as_dict()["n_patients"] == 4.0


def test_patient_counts_needs_every_sample_in_the_truth():
    with pytest.raises(ValueError, match="lacks samples"):
        patient_counts(["A", "B"], [1, 0], {"A": 1})


def test_prior_shift_threshold_is_the_bayes_cut_at_the_real_prevalence() -> None:
    from ctcid.metrics import prior_shift_threshold

    assert prior_shift_threshold(0.05) == pytest.approx(0.95)
    assert prior_shift_threshold(0.5) == pytest.approx(0.5)
    # at the returned cut the prior-corrected posterior is exactly 0.5
    pi, pi_b = 0.1, 0.3
    t = prior_shift_threshold(pi, pi_b)
    odds = t / (1 - t) * (pi / (1 - pi)) / (pi_b / (1 - pi_b))
    assert odds == pytest.approx(1.0)
    with pytest.raises(ValueError, match="prevalences"):
        prior_shift_threshold(0.0)


def test_lin_ccc_on_hand_examples():
    assert lin_ccc([0, 3, 7, 20], [0, 3, 7, 20]) == pytest.approx(1.0)
    # means 2 and 3, population variances 2/3 each, covariance 2/3:
    # 2 * 2/3 / (2/3 + 2/3 + (2 - 3)^2) = (4/3) / (7/3) = 4/7
    assert lin_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # the offset costs concordance while Pearson's r stays 1
    assert np.corrcoef([1, 2, 3], [2, 3, 4])[0, 1] == pytest.approx(1.0)
    # mirrored around a common mean of 0: cov -2/3, variances 2/3 -> -1
    assert lin_ccc([-1, 0, 1], [1, 0, -1]) == pytest.approx(-1.0)
    assert lin_ccc([1, 2, 3], [-1, -2, -3]) < 0


def test_lin_ccc_is_nan_when_undefined():
    assert math.isnan(lin_ccc([3], [3]))
    assert math.isnan(lin_ccc([], []))
    assert math.isnan(lin_ccc([2, 2, 2], [2, 2, 2]))  # 0 / 0
    # two different constants: covariance 0 over a squared offset of 1
    assert lin_ccc([2, 2, 2], [3, 3, 3]) == 0.0
    with pytest.raises(ValueError, match="values"):
        lin_ccc([1, 2], [1])


def test_bland_altman_on_a_hand_example():
    true = [5, 5, 5, 5]
    predicted = [6, 4, 7, 5]  # differences 1, -1, 2, 0
    ba = bland_altman(true, predicted)
    # bias 2/4 = 0.5; squared deviations 0.25 + 2.25 + 2.25 + 0.25 = 5, sd = sqrt(5 / 3)
    sd = math.sqrt(5 / 3)
    assert ba.n == 4
    assert ba.bias == pytest.approx(0.5)
    assert ba.sd == pytest.approx(sd)
    assert (ba.lower, ba.upper) == pytest.approx((0.5 - 1.96 * sd, 0.5 + 1.96 * sd))


def test_bland_altman_below_two_pairs():
    one = bland_altman([3], [5])
    assert one.bias == 2.0 and one.n == 1
    assert all(math.isnan(v) for v in (one.sd, one.lower, one.upper))
    assert math.isnan(bland_altman([], []).bias)


def test_patient_counts_carry_ccc_and_limits_of_agreement():
    samples = ["A"] * 4 + ["B"] * 3 + ["C"] * 8
    y_pred = [1, 1, 0, 0] + [0, 0, 0] + [1] * 6 + [0, 0]
    counts = patient_counts(samples, y_pred, {"A": 3, "B": 0, "C": 7, "D": 1})
    true, predicted = [3, 0, 7, 1], [2, 0, 6, 0]
    assert counts.ccc == pytest.approx(lin_ccc(true, predicted))
    assert 0 < counts.ccc < 1
    limits = bland_altman(true, predicted)
    assert (counts.loa_low, counts.loa_high) == pytest.approx((limits.lower, limits.upper))
    assert counts.loa_low < counts.bias < counts.loa_high
    assert {"ccc", "loa_low", "loa_high"} <= set(counts.as_dict())


def count_table(true, predicted) -> pd.DataFrame:
    return pd.DataFrame(
        {"sample": [f"P{i}" for i in range(len(true))], "true_count": true, "predicted_count": predicted}
    )


def test_patient_intervals_contain_the_point_estimate_and_are_seeded():
    rng = np.random.default_rng(2)
    true = rng.poisson(8, 40)
    predicted = np.maximum(true + rng.integers(-3, 4, 40), 0)
    table = count_table(true, predicted)
    counts = patient_counts(
        np.repeat(table["sample"], table["predicted_count"]),
        np.ones(predicted.sum()),
        dict(zip(table["sample"], true, strict=True)),
    )
    intervals = patient_intervals(counts.table, n_boot=500, seed=0)
    assert set(intervals) == set(PATIENT_INTERVAL_METRICS)
    for name, (low, high) in intervals.items():
        assert low <= getattr(counts, name) <= high, name
        assert low < high or name == "agreement_ge1", name
    assert patient_intervals(counts.table, 200, seed=3) == patient_intervals(counts.table, 200, seed=3)
    assert patient_intervals(counts.table, 200, seed=3) != patient_intervals(counts.table, 200, seed=4)


def test_patient_intervals_of_perfect_counts_and_without_draws():
    table = count_table([0, 2, 6, 11], [0, 2, 6, 11])
    intervals = patient_intervals(table, n_boot=200, seed=0)
    assert intervals["mae"] == (0.0, 0.0)
    assert intervals["bias"] == (0.0, 0.0)
    assert intervals["agreement_ge1"] == (1.0, 1.0)
    assert intervals["agreement_ge5"] == (1.0, 1.0)
    assert intervals["ccc"][1] == pytest.approx(1.0)
    for empty in (patient_intervals(table, 0, seed=0), patient_intervals(table.iloc[:0], 100, seed=0)):
        assert all(math.isnan(v) for pair in empty.values() for v in pair)
    # one patient: every draw repeats it, so the CCC is 0/0 on every draw
    assert all(math.isnan(v) for v in patient_intervals(table.iloc[:1], 50, seed=0)["ccc"])


def test_calibration_of_a_perfectly_calibrated_hand_example():
    y = [1, 0, 0, 0] + [1, 1, 1, 0]
    score = [0.25] * 4 + [0.75] * 4
    cal = calibration(y, score)
    assert cal.ece == pytest.approx(0.0)
    # (1 * 0.75^2 + 3 * 0.25^2 + 3 * 0.25^2 + 1 * 0.75^2) / 8 = (0.5625 + 0.1875 + 0.1875 + 0.5625) / 8
    assert cal.brier == pytest.approx(0.1875)
    assert cal.n == 8
    assert cal.bins["count"].tolist() == [4, 4]
    assert cal.bins[["bin_low", "bin_high"]].to_numpy() == pytest.approx(np.array([[0.2, 0.3], [0.7, 0.8]]))
    assert cal.bins["observed"].tolist() == pytest.approx([0.25, 0.75])
    assert cal.as_dict() == pytest.approx({"brier": 0.1875, "ece": 0.0, "n": 8.0})


def test_calibration_of_an_overconfident_example():
    # 10 cells scored 0.95 of which 5 are CTCs, 10 scored 0.0 of which none: one bin off by 0.45
    y = [1] * 5 + [0] * 5 + [0] * 10
    score = [0.95] * 10 + [0.0] * 10
    cal = calibration(y, score)
    assert cal.ece == pytest.approx(10 / 20 * 0.45)
    # (5 * 0.05^2 + 5 * 0.95^2 + 10 * 0) / 20
    assert cal.brier == pytest.approx((5 * 0.0025 + 5 * 0.9025) / 20)
    assert cal.bins["count"].tolist() == [10, 10]


def test_calibration_bin_edges_and_degenerate_input():
    # half-open bins: 0.1 opens the second of 10 bins, 1.0 closes the last one
    cal = calibration([0, 1, 1], [0.1, 1.0, 0.95])
    assert cal.bins["bin_low"].tolist() == pytest.approx([0.1, 0.9])
    assert cal.bins["count"].tolist() == [1, 2]
    empty = calibration([], [])
    assert math.isnan(empty.brier) and math.isnan(empty.ece) and empty.n == 0
    assert empty.bins.empty and list(empty.bins.columns) == [
        "bin_low",
        "bin_high",
        "mean_predicted",
        "observed",
        "count",
    ]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([0, 1], [0.2, 1.5])


def test_prevalence_behaviour_of_a_fixed_threshold():
    pb = prevalence_behaviour(0.9, 0.99)
    # (1 - spec) / ((1 - spec) + (1 - sens)) = 0.01 / 0.11
    assert pb.break_even == pytest.approx(1 / 11)
    # 1000 * (0.99 * 0.01 - 0.01 * 0.1) = 8.9: rare CTCs, false positives dominate
    assert pb.bias_per_1000[0.01] == pytest.approx(8.9)
    # 1000 * (0.5 * 0.01 - 0.5 * 0.1) = -45: common CTCs, misses dominate
    assert pb.bias_per_1000[0.5] == pytest.approx(-45.0)
    assert set(pb.bias_per_1000) == {0.01, 0.05, 0.2, 0.5}
    flat = pb.as_dict()
    assert flat["bias_per_1000_at_0.01"] == pytest.approx(8.9)
    assert flat["bias_per_1000_at_0.5"] == pytest.approx(-45.0)
    assert all(isinstance(v, float) for v in flat.values())
    # at break-even the expected count is unbiased
    assert prevalence_behaviour(0.9, 0.99, prevalences=(1 / 11,)).bias_per_1000[1 / 11] == pytest.approx(0.0)


def test_prevalence_behaviour_without_errors_or_with_nan():
    assert math.isnan(prevalence_behaviour(1.0, 1.0).break_even)
    assert math.isnan(prevalence_behaviour(math.nan, 0.9).break_even)
    with pytest.raises(ValueError, match="sensitivity"):
        prevalence_behaviour(1.2, 0.9)
