"""The gate's per-patient lines: the count error paired with the rule's, configured criteria that
decide, shown endpoints that do not."""

from __future__ import annotations

import numpy as np
import pytest

from ctcid.config.loader import parse_params
from ctcid.evaluation.evaluate import TestSet as Patients
from ctcid.evaluation.evaluate import evaluate_scores
from ctcid.registry.promote import Assessment, PromoteConfig, judge


@pytest.fixture(scope="module")
def tests_set() -> Patients:
    """12 patients of 20 detections; patient k holds k % 4 CTCs (0 to 3), all labelled."""
    samples = np.repeat([f"P{k:02d}" for k in range(12)], 20)
    y = np.zeros(samples.size, dtype=np.int64)
    for k in range(12):
        y[k * 20 : k * 20 + k % 4] = 1
    counts = {f"P{k:02d}": k % 4 for k in range(12)}
    rows = np.arange(samples.size)
    rule = y.astype(np.float64)
    rule[[20 * k + 19 for k in range(0, 12, 3)]] = 1.0  # the rule over-counts four patients by one
    return Patients(rows, y, rows, samples, counts, "annotations", rule)


def assessment(version: str, scores: np.ndarray, tests: Patients) -> Assessment:
    evaluation = evaluate_scores(f"v{version}", scores, tests, 0.5, 0.5, 200, 0)
    return Assessment(version, evaluation, {}, {})


def config(**registry) -> PromoteConfig:
    params = parse_params({"registry": {"behaviour_checks": False, "min_site_specificity": None, **registry}})
    return PromoteConfig.project(params)


def lines(criteria, prefix: str = "patients:") -> dict[str, object]:
    return {c.name: c for c in criteria if c.name.startswith(prefix)}


def test_the_count_error_is_paired_with_the_rule_and_shown_endpoints_do_not_decide(tests_set) -> None:
    perfect = assessment("2", tests_set.y_true.astype(np.float64), tests_set)
    shown = lines(judge(config(), perfect, None))
    versus = shown["patients: count MAE - rule's"]
    # the rule is off by one on 4 of 12 patients, the perfect scorer on none: -1/3
    assert versus.challenger.startswith("-0.33") and versus.passed is None
    assert shown["patients: sensitivity_ge1"].challenger == 1.0
    assert all(c.passed is None for c in shown.values())


def test_a_configured_endpoint_decides_both_ways(tests_set) -> None:
    perfect = assessment("2", tests_set.y_true.astype(np.float64), tests_set)
    blind = assessment("1", np.zeros(tests_set.y_true.size), tests_set)  # counts nothing: misses 9 patients
    policy = config(patient_criteria={"sensitivity_ge1": {"min": 0.8}, "mae": {"max": 0.5}})
    ours = lines(judge(policy, perfect, blind))
    assert ours["patients: sensitivity_ge1 >= 0.8"].passed is True
    assert ours["patients: sensitivity_ge1 >= 0.8"].champion == 0.0
    assert ours["patients: mae <= 0.5"].passed is True
    theirs = lines(judge(policy, blind, perfect))
    assert theirs["patients: sensitivity_ge1 >= 0.8"].passed is False
    assert theirs["patients: mae <= 0.5"].passed is False
    # a decided endpoint is not repeated as a shown one
    assert "patients: sensitivity_ge1" not in theirs


def test_a_bound_needs_min_or_max_and_an_endpoint_the_gate_knows() -> None:
    with pytest.raises(ValueError, match="min, max or both"):
        parse_params({"registry": {"patient_criteria": {"mae": {}}}})
    with pytest.raises(ValueError, match="patient_criteria"):
        parse_params({"registry": {"patient_criteria": {"auc_ge1": {"min": 0.5}}}})
