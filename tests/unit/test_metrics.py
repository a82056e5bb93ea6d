import math

import numpy as np
import pytest

from ctcid.metrics import (
    BinaryMetrics,
    binary_metrics,
    bootstrap_intervals,
    patient_counts,
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
