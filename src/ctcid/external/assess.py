"""One scorer on one cohort: cell metrics, per-patient agreement, calibration, prevalence behaviour.

Cell metrics use the labelled (annotation-matched) detections at the scorer's operating threshold,
with stratified bootstrap intervals over cells; per-patient agreement counts every detection at the
counting threshold against the annotated count, with bootstrap intervals over patients
(:func:`ctcid.metrics.patient_intervals`). Calibration is reported for probabilistic scorers only.
:class:`CohortResult` gathers every scorer's assessment of one cohort with its drift tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ctcid.evaluation.drift import DriftReference
from ctcid.external.cohort import Cohort
from ctcid.external.scoring import Scorer
from ctcid.metrics import (
    BinaryMetrics,
    Calibration,
    PatientCounts,
    PrevalenceBehaviour,
    binary_metrics,
    bootstrap_intervals,
    calibration,
    patient_counts,
    patient_intervals,
    prevalence_behaviour,
)


@dataclass(frozen=True)
class Truth:
    """What is known of a cohort: labels of matched detections, annotated counts per patient."""

    labelled: np.ndarray  # positions (in manifest order) of detections with a true label
    y_true: np.ndarray  # their labels
    samples: np.ndarray  # sample of every detection
    counts: dict[str, int] | None  # annotated CTCs per usable sample; None without annotations

    @property
    def prevalence(self) -> float:
        return float(self.y_true.mean()) if self.y_true.size else math.nan


@dataclass(frozen=True)
class Assessment:
    scorer: Scorer
    operating: BinaryMetrics | None  # None: nothing labelled
    intervals: dict[str, tuple[float, float]]
    at_count: BinaryMetrics | None  # the counting threshold, on the same cells
    patients: PatientCounts | None
    patient_ci: dict[str, tuple[float, float]]
    calibration: Calibration | None
    prevalence: PrevalenceBehaviour | None

    def report(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "label": self.scorer.label,
            "operating_threshold": self.scorer.operating,
            "counting_threshold": self.scorer.counting,
        }
        if self.operating is not None:
            values["cells"] = self.operating.as_dict()
            values["cells_ci95"] = _intervals(self.intervals)
        if self.patients is not None:
            values["patients"] = self.patients.as_dict()
            values["patients_ci95"] = _intervals(self.patient_ci)
        if self.calibration is not None:
            values["calibration"] = self.calibration.as_dict()
        if self.prevalence is not None:
            values["prevalence"] = self.prevalence.as_dict()
        return values


def assess(scorer: Scorer, truth: Truth, n_boot: int, seed: int) -> Assessment:
    y_score = scorer.scores[truth.labelled]
    labelled = truth.y_true.size > 0
    operating = binary_metrics(truth.y_true, y_score, scorer.operating) if labelled else None
    at_count = binary_metrics(truth.y_true, y_score, scorer.counting) if labelled else None
    patients = None
    if truth.counts is not None:
        patients = patient_counts(truth.samples, scorer.scores >= scorer.counting, truth.counts)
    return Assessment(
        scorer=scorer,
        operating=operating,
        intervals=bootstrap_intervals(truth.y_true, y_score, scorer.operating, n_boot, seed)
        if labelled
        else {},
        at_count=at_count,
        patients=patients,
        patient_ci=patient_intervals(patients.table, n_boot, seed) if patients is not None else {},
        calibration=calibration(truth.y_true, y_score) if labelled and scorer.probabilistic else None,
        prevalence=(
            prevalence_behaviour(at_count.sensitivity, at_count.specificity) if at_count is not None else None
        ),
    )


def _intervals(intervals: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    return {name: {"low": low, "high": high} for name, (low, high) in intervals.items()}


@dataclass(frozen=True)
class CohortResult:
    cohort: Cohort
    truth: Truth
    assessments: dict[str, Assessment]
    fields: pd.DataFrame  # per field: sample, field, features, drift_score, drift_flag, drift_reason
    samples: pd.DataFrame  # per sample: drift and every scorer's count against the truth
    reference: DriftReference

    @property
    def name(self) -> str:
        return self.cohort.info.name
