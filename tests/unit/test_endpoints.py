"""One scorer on one set of patients (ctcid.evaluation.endpoints): the per-patient table, the review
burden, the endpoints with their curves, and the pairing with the rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctcid.clinical import (
    CUTOFFS,
    ENDPOINT_NAMES,
    PREVALENCE_GRID,
    patient_endpoint_intervals,
    patient_endpoints,
)
from ctcid.evaluation.endpoints import (
    PATIENT_COLUMNS,
    Truth,
    assess_patients,
    compare_with_rule,
    patient_table,
    review_burden,
)

# Four patients; D has no detection at all. Operating threshold 0.5, counting threshold 0.75: a
# score equal to a threshold is at it (>=), as everywhere in ctcid.
SAMPLES = np.array(["A", "A", "A", "B", "B", "C", "C", "C", "C"])
SCORES = np.array([0.9, 0.75, 0.1, 0.5, 0.2, 0.95, 0.8, 0.55, 0.3])
COUNTS = {"C": 5, "A": 2, "B": 0, "D": 1}
OPERATING, COUNTING = 0.5, 0.75


def four_patients(counts: dict[str, int] | None = COUNTS) -> Truth:
    labelled = np.array([0, 1, 2, 3, 5, 6])
    y_true = np.array([1, 1, 0, 0, 1, 1])
    return Truth(labelled, y_true, SAMPLES, counts)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_the_patient_table_has_every_annotated_patient_counted_and_flagged_at_its_own_threshold() -> None:
    table = patient_table(four_patients(), SCORES, OPERATING, COUNTING)
    assert tuple(table.columns) == PATIENT_COLUMNS
    expected = pd.DataFrame(
        {
            "sample": ["A", "B", "C", "D"],
            "true_count": [2, 0, 5, 1],
            "predicted_count": [2, 0, 2, 0],  # >= 0.75: A's 0.9 and 0.75, C's 0.95 and 0.8
            "detections": [3, 2, 4, 0],
            "flagged": [2, 1, 3, 0],  # >= 0.5: B's 0.5 too, C's 0.55 too
        }
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    for column in ("true_count", "predicted_count", "detections", "flagged"):
        assert table[column].dtype.kind == "i", column
    # the count follows the counting threshold alone, the flags the operating threshold alone
    swapped = patient_table(four_patients(), SCORES, COUNTING, OPERATING)
    assert swapped["predicted_count"].tolist() == [2, 1, 3, 0]
    assert swapped["flagged"].tolist() == [2, 0, 2, 0]


def test_a_patient_without_detections_is_a_row_of_zeros() -> None:
    truth = Truth(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=str), {"X": 3})
    table = patient_table(truth, np.empty(0), OPERATING, COUNTING)
    assert table.to_dict("records") == [
        {"sample": "X", "true_count": 3, "predicted_count": 0, "detections": 0, "flagged": 0}
    ]


def test_the_review_burden_by_hand() -> None:
    burden = review_burden(patient_table(four_patients(), SCORES, OPERATING, COUNTING))
    # detections per patient 3, 2, 4, 0; flagged 2, 1, 3, 0 (sorted 0, 1, 2, 3)
    assert burden == pytest.approx(
        {
            "patients": 4.0,
            "detections_median": 2.5,
            "flagged_median": 1.5,
            "flagged_q1": 0.75,  # linear percentile: position 0.25 * 3 between 0 and 1
            "flagged_q3": 2.25,
            "flagged_max": 3.0,
            "flagged_share": 6 / 9,
        }
    )
    assert review_burden(pd.DataFrame(columns=list(PATIENT_COLUMNS))) == {"patients": 0.0}
    nothing = pd.DataFrame({"sample": ["A"], "true_count": [0], "predicted_count": [0], "detections": [0],
                            "flagged": [0]})
    assert math.isnan(review_burden(nothing)["flagged_share"])  # nothing detected: no share


def cohort(n_patients: int = 24, seed: int = 4) -> tuple[Truth, np.ndarray, np.ndarray]:
    """Patients with 0 to 30 detections each (some with none), about 20 % CTCs, a noisy scorer and a
    rule that misses a third of the CTCs; true counts from the labelled cells plus a missed CTC or two."""
    rng = np.random.default_rng(seed)
    names = [f"P{i:02d}" for i in range(n_patients)]
    sizes = rng.integers(0, 31, n_patients)
    sizes[:2] = 0
    samples = np.repeat(names, sizes)
    y = (rng.random(samples.size) < 0.2).astype(np.int64)
    scores = np.clip(0.6 * y + rng.normal(0.2, 0.2, samples.size), 0, 1)
    rule = np.where(y == 1, rng.random(samples.size) < 0.67, rng.random(samples.size) < 0.05).astype(float)
    labelled = np.flatnonzero(rng.random(samples.size) < 0.9)
    counted = pd.Series(y, index=samples).groupby(level=0).sum()
    counts = {n: int(counted.get(n, 0)) + int(rng.integers(0, 2)) for n in names}
    return Truth(labelled, y[labelled], samples, counts), scores, rule


def test_assess_patients_needs_annotated_counts() -> None:
    truth, scores, _ = cohort()
    without = Truth(truth.labelled, truth.y_true, truth.samples, None)
    assert assess_patients(without, scores, 0.5, 0.7, 20, 0) is None


def test_assess_patients_reports_the_clinical_endpoints_of_its_own_table() -> None:
    truth, scores, _ = cohort()
    assessed = assess_patients(truth, scores, 0.3, 0.45, 200, 3)
    assert assessed is not None
    pd.testing.assert_frame_equal(assessed.table, patient_table(truth, scores, 0.3, 0.45))
    assert len(assessed.table) == len(truth.counts) and (assessed.table["detections"] == 0).sum() >= 2
    true = assessed.table["true_count"].to_numpy(dtype=float)
    predicted = assessed.table["predicted_count"].to_numpy(dtype=float)
    expected = patient_endpoints(true, predicted)
    assert list(assessed.values) == list(ENDPOINT_NAMES)
    assert all(same(assessed.values[k], expected[k]) for k in ENDPOINT_NAMES)
    assert assessed.values["n_patients"] == 24 and assessed.values["mae"] > 0
    intervals = patient_endpoint_intervals(true, predicted, 200, 3)
    assert set(assessed.intervals) == set(ENDPOINT_NAMES)
    for name in ENDPOINT_NAMES:
        assert all(same(a, b) for a, b in zip(assessed.intervals[name], intervals[name], strict=True)), name
    assert assessed.review == review_burden(assessed.table)

    curves = assessed.curves
    assert sorted(curves["cutoff"].unique()) == [1, 3, 5] == list(CUTOFFS)
    for cutoff, curve in curves.groupby("cutoff"):
        assert len(curve) == 99
        np.testing.assert_allclose(curve["prevalence"], PREVALENCE_GRID)
        # at the cohort's own prevalence the curve's PPV is the cohort's PPV at that cut-off
        prevalence = assessed.values[f"prevalence_ge{cutoff}"]
        ppv = assessed.values[f"ppv_ge{cutoff}"]
        assert ppv < 1.0  # a scorer with false positive patients: the curve has a shape
        at = np.interp(prevalence, curve["prevalence"], curve["ppv"])
        assert at == pytest.approx(ppv, abs=0.02), cutoff
        # bootstrap bands around the curve where it is defined
        banded = curve.dropna(subset=["ppv", "ppv_low", "ppv_high"])
        assert len(banded) > 0
        assert (banded["ppv_low"] <= banded["ppv"] + 1e-9).all()
        assert (banded["ppv"] <= banded["ppv_high"] + 1e-9).all()

    report = assessed.report()
    assert set(report) == {"endpoints", "endpoints_ci95", "review"}
    assert set(report["endpoints_ci95"]["mae"]) == {"low", "high"}


def test_without_resamples_the_endpoints_stand_without_intervals_or_bands() -> None:
    truth, scores, _ = cohort()
    assessed = assess_patients(truth, scores, 0.4, 0.6, 0, 3)
    assert assessed is not None
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in assessed.intervals.values())
    assert assessed.curves[["ppv_low", "ppv_high", "npv_low", "npv_high"]].isna().all().all()
    assert not math.isnan(assessed.values["mae"])


def test_a_scorer_identical_to_the_rule_is_no_different_from_it() -> None:
    truth, _, rule = cohort()
    compared = compare_with_rule(truth, rule.copy(), 0.5, 0.5, rule, 200, 1)
    assert compared is not None
    assert (compared.cells.a_only, compared.cells.b_only) == (0, 0)
    assert compared.cells.p_value == 1.0
    assert compared.mae.difference == 0.0
    assert (compared.mae.low, compared.mae.high) == (0.0, 0.0)
    report = compared.report()
    assert report["mcnemar_model_only"] == report["mcnemar_rule_only"] == 0.0
    assert report["mae_difference"] == 0.0


def test_a_scorer_right_where_the_rule_is_wrong_wins_on_cells_and_patients() -> None:
    truth, _, rule = cohort()
    y = np.zeros(truth.samples.size)
    y[truth.labelled] = truth.y_true
    unlabelled = np.setdiff1d(np.arange(y.size), truth.labelled)
    # right on every labelled cell, the rule's call elsewhere: it differs from the rule only where the
    # rule is wrong; the counts use the same calls (operating == counting)
    scores = y.copy()
    scores[unlabelled] = rule[unlabelled]
    compared = compare_with_rule(truth, scores, 0.5, 0.5, rule, 300, 2)
    assert compared is not None
    rule_wrong = int(np.sum((rule[truth.labelled] >= 0.5) != truth.y_true))
    assert compared.cells.a_only == rule_wrong > 0 and compared.cells.b_only == 0
    assert compared.cells.p_value < 0.05

    ours = patient_table(truth, scores, 0.5, 0.5)
    theirs = patient_table(truth, rule, 0.5, 0.5)
    true = ours["true_count"].to_numpy()
    ours_error = np.abs(ours["predicted_count"].to_numpy() - true)
    gap = ours_error - np.abs(theirs["predicted_count"].to_numpy() - true)
    assert compared.mae.difference == pytest.approx(gap.mean())
    assert compared.mae.difference < 0 and compared.mae.low < compared.mae.difference
    assert compared.mae.n_patients == len(truth.counts)
    # the other way round, the rule is the scorer that loses
    reverse = compare_with_rule(truth, rule, 0.5, 0.5, scores, 300, 2)
    assert reverse is not None and reverse.cells.b_only == rule_wrong and reverse.mae.difference > 0


def test_the_rule_comparison_needs_annotated_counts() -> None:
    truth, scores, rule = cohort()
    without = Truth(truth.labelled, truth.y_true, truth.samples, None)
    assert compare_with_rule(without, scores, 0.5, 0.5, rule, 10, 0) is None


def test_truth_reads_its_prevalence_and_each_labelled_cells_patient() -> None:
    truth = four_patients()
    assert truth.prevalence == pytest.approx(4 / 6)
    assert truth.cell_patients.tolist() == ["A", "A", "A", "B", "C", "C"]
    empty = Truth(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), SAMPLES, COUNTS)
    assert math.isnan(empty.prevalence)
