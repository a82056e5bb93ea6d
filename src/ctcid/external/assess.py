"""One scorer on one cohort: cell metrics, per-patient agreement, calibration, prevalence behaviour.

Cell metrics use the labelled (annotation-matched) detections at the scorer's operating threshold,
with intervals from resampling whole patients (their cells share a slide and a stain); per-patient
agreement and the clinical endpoints count every detection at the counting threshold against the
annotated count, with bootstrap intervals over patients (:mod:`ctcid.evaluation.endpoints`), and
every scorer is paired with the rule. Calibration is reported for probabilistic scorers only;
re-imaged specimens give each scorer's repeatability.
:class:`CohortResult` gathers every scorer's assessment of one cohort with its drift tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ctcid.clinical import Repeatability, cluster_bootstrap_intervals, repeatability
from ctcid.evaluation.drift import DriftReference
from ctcid.evaluation.endpoints import (
    PatientAssessment,
    RuleComparison,
    Truth,
    assess_patients,
    compare_with_rule,
)
from ctcid.external.cohort import Cohort
from ctcid.external.scoring import Scorer
from ctcid.metrics import (
    BinaryMetrics,
    Calibration,
    PatientCounts,
    PrevalenceBehaviour,
    binary_metrics,
    calibration,
    patient_counts,
    patient_intervals,
    prevalence_behaviour,
)


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
    endpoints: PatientAssessment | None = None
    versus_rule: RuleComparison | None = None
    repeatability: Repeatability | None = None  # counts of re-imaged specimens (cohort.repeatability)

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
        if self.endpoints is not None:
            values.update(self.endpoints.report())
        if self.versus_rule is not None:
            values["versus_rule"] = self.versus_rule.report()
        if self.repeatability is not None:
            values["repeatability"] = self.repeatability.as_dict()
        return values


def assess(
    scorer: Scorer,
    truth: Truth,
    n_boot: int,
    seed: int,
    rule: np.ndarray | None = None,
    repeats: RepeatCounts | None = None,
) -> Assessment:
    """One scorer on one cohort; ``rule``: the rule's calls on the same detections, to pair with."""
    y_score = scorer.scores[truth.labelled]
    labelled = truth.y_true.size > 0
    operating = binary_metrics(truth.y_true, y_score, scorer.operating) if labelled else None
    at_count = binary_metrics(truth.y_true, y_score, scorer.counting) if labelled else None
    intervals: dict[str, tuple[float, float]] = {}
    if labelled:
        intervals = cluster_bootstrap_intervals(
            truth.y_true, y_score, truth.cell_patients, scorer.operating, n_boot, seed
        )
    if not scorer.probabilistic and operating is not None and at_count is not None:
        # the rule's 0/1 calls: its sensitivity and specificity, never an "AUC" of two points
        operating, at_count = replace(operating, auc=math.nan), replace(at_count, auc=math.nan)
        intervals["auc"] = (math.nan, math.nan)
    patients = None
    if truth.counts is not None:
        patients = patient_counts(truth.samples, scorer.scores >= scorer.counting, truth.counts)
    versus_rule = None
    if rule is not None and scorer.probabilistic:
        versus_rule = compare_with_rule(
            truth, scorer.scores, scorer.operating, scorer.counting, rule, n_boot, seed
        )
    return Assessment(
        scorer=scorer,
        operating=operating,
        intervals=intervals,
        at_count=at_count,
        patients=patients,
        patient_ci=patient_intervals(patients.table, n_boot, seed) if patients is not None else {},
        calibration=calibration(truth.y_true, y_score) if labelled and scorer.probabilistic else None,
        prevalence=(
            prevalence_behaviour(at_count.sensitivity, at_count.specificity) if at_count is not None else None
        ),
        endpoints=assess_patients(truth, scorer.scores, scorer.operating, scorer.counting, n_boot, seed),
        versus_rule=versus_rule,
        repeatability=None if repeats is None else repeats.repeatability(scorer),
    )


@dataclass(frozen=True)
class RepeatCounts:
    """Specimens imaged more than once: each image's detections and each scorer's scores on them.

    ``specimens`` names the specimen of every image (the original image's sample name); a scorer's
    count on each image, at its counting threshold, gives the within-specimen SD (CLSI EP05).
    """

    images: np.ndarray  # image (sample) of every detection of every image, originals included
    specimens: dict[str, str]  # image -> specimen
    scores: dict[str, np.ndarray]  # scorer name -> scores over ``images``

    def counts(self, scorer: Scorer) -> pd.Series:
        counted = pd.Series(self.scores[scorer.name] >= scorer.counting, index=self.images)
        every = sorted(self.specimens)
        return counted.groupby(level=0).sum().reindex(every, fill_value=0)

    def repeatability(self, scorer: Scorer) -> Repeatability | None:
        if scorer.name not in self.scores:
            return None
        counts = self.counts(scorer)
        specimens = [self.specimens[image] for image in counts.index]
        return repeatability(specimens, counts.to_numpy(dtype=np.float64))


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
