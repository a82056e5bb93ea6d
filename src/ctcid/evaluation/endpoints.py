"""One scorer on one set of patients, as a lab decides on it: the per-patient endpoints.

A lab reads one number per patient, the CTC count, and calls a patient positive at a cut-off
(>= 1, 3 or 5 CTCs per sample). :func:`assess_patients` scores that number for any scorer (a CNN,
the GBM, the rule) over every detection of every patient: the clinical endpoints at each cut-off,
limit of blank, method comparison, each with an interval from resampling whole patients
(:mod:`ctcid.clinical`), the PPV/NPV curves across prevalence and the review burden.
:func:`compare_with_rule` pairs a scorer with the rule on the very same cells (McNemar) and the very
same patients (bootstrap of the MAE difference). The evaluate, external, audit and promote steps
all use these, so a number means the same wherever it is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctcid.clinical import (
    CUTOFFS,
    McNemar,
    PairedDifference,
    patient_bootstrap_draws,
    patient_endpoint_intervals,
    patient_endpoints,
    prevalence_curve,
)
from ctcid.clinical import mcnemar as mcnemar_test
from ctcid.clinical import paired_mae_difference as mae_difference

PATIENT_COLUMNS = ("sample", "true_count", "predicted_count", "detections", "flagged")


@dataclass(frozen=True)
class Truth:
    """What is known of a set of patients: labels of matched detections, annotated counts.

    ``samples`` names the patient of every detection (the scorers' scores run over the same
    detections, in the same order); ``labelled`` are the positions of detections with a label.
    """

    labelled: np.ndarray
    y_true: np.ndarray
    samples: np.ndarray
    counts: dict[str, int] | None  # annotated CTCs per patient; None without annotations

    @property
    def prevalence(self) -> float:
        return float(self.y_true.mean()) if self.y_true.size else math.nan

    @property
    def cell_patients(self) -> np.ndarray:
        """The patient of each labelled cell: the cluster a cell-level interval resamples."""
        return self.samples[self.labelled]


@dataclass(frozen=True)
class PatientAssessment:
    """Every per-patient endpoint of one scorer, with 95 % intervals over patients."""

    table: pd.DataFrame  # PATIENT_COLUMNS, one row per patient
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    curves: pd.DataFrame  # cutoff, prevalence, ppv, npv and their bands
    review: dict[str, float]

    def report(self) -> dict[str, Any]:
        return {
            "endpoints": self.values,
            "endpoints_ci95": {k: {"low": lo, "high": hi} for k, (lo, hi) in self.intervals.items()},
            "review": self.review,
        }


def patient_table(truth: Truth, scores: np.ndarray, operating: float, counting: float) -> pd.DataFrame:
    """Per patient: the true count, the count at ``counting``, detections and flagged for review.

    Every patient of ``truth.counts`` is a row, those left without a detection too (count 0).
    """
    assert truth.counts is not None
    frame = pd.DataFrame(
        {"sample": truth.samples, "counted": scores >= counting, "flagged": scores >= operating}
    )
    grouped = frame.groupby("sample").agg(
        predicted_count=("counted", "sum"), detections=("counted", "size"), flagged=("flagged", "sum")
    )
    names = sorted(truth.counts)
    grouped = grouped.reindex(names, fill_value=0)
    return pd.DataFrame(
        {
            "sample": names,
            "true_count": [int(truth.counts[n]) for n in names],
            "predicted_count": grouped["predicted_count"].to_numpy(dtype=np.int64),
            "detections": grouped["detections"].to_numpy(dtype=np.int64),
            "flagged": grouped["flagged"].to_numpy(dtype=np.int64),
        }
    )


def review_burden(table: pd.DataFrame) -> dict[str, float]:
    """Detections in, candidates flagged for a reviewer out, per patient (as rare-cell pipelines report).

    The flagged candidates are the detections at or above the operating threshold (the sensitive
    call a reviewer confirms), not the count: that is what a person has to look at.
    """
    detections = table["detections"].to_numpy(dtype=np.float64)
    flagged = table["flagged"].to_numpy(dtype=np.float64)
    if detections.size == 0:
        return {"patients": 0.0}
    q = np.percentile
    total = detections.sum()
    return {
        "patients": float(detections.size),
        "detections_median": float(np.median(detections)),
        "flagged_median": float(np.median(flagged)),
        "flagged_q1": float(q(flagged, 25)),
        "flagged_q3": float(q(flagged, 75)),
        "flagged_max": float(flagged.max()),
        "flagged_share": float(flagged.sum() / total) if total else math.nan,
    }


def assess_patients(
    truth: Truth, scores: np.ndarray, operating: float, counting: float, n_boot: int, seed: int
) -> PatientAssessment | None:
    """The endpoints of one scorer, or None without annotated counts."""
    if truth.counts is None:
        return None
    table = patient_table(truth, scores, operating, counting)
    true = table["true_count"].to_numpy(dtype=np.float64)
    predicted = table["predicted_count"].to_numpy(dtype=np.float64)
    values = patient_endpoints(true, predicted)
    draws = patient_bootstrap_draws(true, predicted, n_boot, seed) if n_boot > 0 and true.size else {}
    curves = [
        prevalence_curve(
            values[f"sensitivity_ge{c}"],
            values[f"specificity_ge{c}"],
            draws.get(f"sensitivity_ge{c}"),
            draws.get(f"specificity_ge{c}"),
        ).assign(cutoff=c)
        for c in CUTOFFS
    ]
    return PatientAssessment(
        table=table,
        values=values,
        intervals=patient_endpoint_intervals(true, predicted, n_boot, seed, draws=draws or None),
        curves=pd.concat(curves, ignore_index=True),
        review=review_burden(table),
    )


@dataclass(frozen=True)
class RuleComparison:
    """A scorer against the rule: paired on the same labelled cells and on the same patients."""

    cells: McNemar  # the scorer at its operating threshold vs the rule's call
    mae: PairedDifference  # scorer's per-patient MAE minus the rule's (< 0: the scorer counts better)
    # the rule's per-patient endpoints (point values) on the very same patients, e.g. its
    # blank_positive_share, which the promotion gate holds the scorer's against
    rule: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, float]:
        return {
            "mcnemar_model_only": float(self.cells.a_only),
            "mcnemar_rule_only": float(self.cells.b_only),
            "mcnemar_statistic": float(self.cells.statistic),
            "mcnemar_p": float(self.cells.p_value),
            "mae_difference": float(self.mae.difference),
            "mae_difference_low": float(self.mae.low),
            "mae_difference_high": float(self.mae.high),
            "mae_difference_p": float(self.mae.p_value),
        }


def compare_with_rule(
    truth: Truth,
    scores: np.ndarray,
    operating: float,
    counting: float,
    rule: np.ndarray,
    n_boot: int,
    seed: int,
) -> RuleComparison | None:
    """McNemar on the labelled cells, paired bootstrap of the patient MAE; None without counts."""
    if truth.counts is None:
        return None
    calls = scores[truth.labelled] >= operating
    rule_calls = rule[truth.labelled] >= 0.5
    ours = patient_table(truth, scores, operating, counting)
    theirs = patient_table(truth, rule.astype(np.float64), 0.5, 0.5)
    true = ours["true_count"].to_numpy(dtype=np.float64)
    return RuleComparison(
        cells=mcnemar_test(truth.y_true, calls, rule_calls),
        mae=mae_difference(
            true,
            ours["predicted_count"].to_numpy(dtype=np.float64),
            theirs["predicted_count"].to_numpy(dtype=np.float64),
            n_boot,
            seed,
        ),
        rule=patient_endpoints(true, theirs["predicted_count"].to_numpy(dtype=np.float64)),
    )
