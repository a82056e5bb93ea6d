"""The ``registry`` section: the promotion gate (docs/registry.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ctcid.config.base import NonNegative, Probability, Section

PromotionMetric = Literal["auc", "sensitivity", "specificity", "accuracy", "f1"]
# the per-patient endpoints of ctcid.clinical.ENDPOINT_NAMES (tests/unit/test_clinical.py keeps them equal)
PatientEndpoint = Literal[
    "mae", "bias", "ccc", "ba_low", "ba_high",
    "sensitivity_ge1", "specificity_ge1", "ppv_ge1", "npv_ge1", "kappa_ge1", "prevalence_ge1",
    "sensitivity_ge3", "specificity_ge3", "ppv_ge3", "npv_ge3", "kappa_ge3", "prevalence_ge3",
    "sensitivity_ge5", "specificity_ge5", "ppv_ge5", "npv_ge5", "kappa_ge5", "prevalence_ge5",
    "lob", "blank_positive_share", "pb_slope", "pb_intercept", "n_patients",
]


class EndpointBound(Section):
    """What a per-patient endpoint of the challenger must reach on the test patients: min, max or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> EndpointBound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class RegistryParams(Section):
    """The promotion gate: what a challenger must reach on the current test set (docs/registry.md).

    Cell metrics are taken at each model's own operating threshold; the count error is the mean
    absolute error of CTCs per test patient at the counting threshold.
    """

    primary_metric: PromotionMetric = "auc"
    # challenger - champion on primary_metric must reach this; 0 = not worse, negative tolerates a drop
    min_improvement: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    min_sensitivity: Probability = 0.95
    min_specificity: Probability = 0.90
    max_patient_mae: NonNegative = 3.0
    # dihedral invariance, CD45 ring lowers and extra CEP8 spots raise the score (docs/registry.md)
    behaviour_checks: bool = True
    behaviour_probes: Annotated[int, Field(ge=8, le=4096)] = 128
    # a directional check passes when the score moves the right way by this much on average ...
    behaviour_min_shift: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # ... and for at least this share of the probe cells (a model ignoring the marker: about half)
    behaviour_min_share: Probability = 0.75
    # true: "more CEP8 spots raise the score" decides, as the other two checks do, at its own raised
    # bar (spot_min_shift, spot_min_share): aneuploidy is the signal, and a model whose scores are
    # already saturated on CTC-sized CD45-negative diploid nuclei (probe scores about 0.95, issue 14)
    # has not learnt it. false: measured and shown, not deciding.
    spot_check_decides: bool = True
    # the spot check passes when extra spots raise the score by this much on average ...
    spot_min_shift: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    # ... and for at least this share of the probe cells
    spot_min_share: Probability = 0.9
    # rule floor: the challenger's per-patient count MAE minus the rule's on the same test patients
    # (the paired difference's point estimate, in CTCs) must be at most this; null = off
    max_mae_over_rule: NonNegative | None = 0.1
    # rule floor: the challenger's share of CTC-free test patients called positive (>= 1 CTC) must
    # not exceed the rule's on the same patients plus this; null = off
    max_blank_positive_over_rule: Annotated[float, Field(ge=-1.0, le=1.0)] | None = 0.0
    # worst-site guard-rail: the challenger's specificity at its operating threshold on every
    # external cohort (external.cohorts, prepared under data/external) must reach this; null = off
    min_site_specificity: Probability | None = 0.9
    # per-patient endpoints on the test patients (docs/evaluation.md#endpoints) that decide, e.g.
    # {sensitivity_ge1: {min: 0.8}, lob: {max: 1}}; empty: none decides
    patient_criteria: dict[PatientEndpoint, EndpointBound] = Field(default_factory=dict)
    # per-patient endpoints the gate's table shows, challenger against champion, without deciding
    patient_shown: list[PatientEndpoint] = Field(
        default_factory=lambda: [
            "sensitivity_ge1", "specificity_ge1", "kappa_ge1", "ppv_ge3", "npv_ge3", "lob"
        ]
    )


