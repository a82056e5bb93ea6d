"""The ``external`` section: cohorts never trained on (docs/external.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from ctcid.config.base import Section
from ctcid.config.simulate import SimulateParams


class ExternalCohort(Section):
    """A cohort the models never train on: simulated (``seed`` and ``simulate``) or a lab's ``folder``."""

    description: str = ""
    seed: Annotated[int, Field(ge=0)] | None = None  # simulated: the simulator's seed (not the training one)
    simulate: dict[str, Any] = Field(default_factory=dict)  # simulated: overrides of simulate.*
    folder: str | None = None  # a lab's images in the raw layout (<folder>/<sample>/<field>.tif)
    # the promotion gate's worst-site guard-rail (registry.min_site_specificity) scores it; false
    # keeps it an untouched hold-out that only 'ctcid external' reports
    guard: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> ExternalCohort:
        if (self.folder is None) == (self.seed is None):
            raise ValueError("give either seed (a simulated cohort) or folder (a lab's images), not both")
        if self.folder is not None and self.simulate:
            raise ValueError("simulate overrides apply to simulated cohorts only; drop them or the folder")
        return self

    @property
    def simulated(self) -> bool:
        return self.folder is None

    def simulation(self, simulate: SimulateParams) -> SimulateParams:
        """The simulator's settings for this cohort: ``simulate`` with the cohort's overrides."""
        return SimulateParams.model_validate({**simulate.model_dump(), **self.simulate})


class ExternalParams(Section):
    """External validation (docs/external.md): cohorts scored by every model, never trained on."""

    bootstrap: Annotated[int, Field(ge=0, le=100_000)] = 1000  # resamples over patients and cells
    gallery: Annotated[int, Field(ge=1, le=64)] = 8  # crops per gallery row
    cohorts: dict[str, ExternalCohort] = Field(default_factory=dict)

    @field_validator("cohorts")
    @classmethod
    def _names(cls, cohorts: dict[str, ExternalCohort]) -> dict[str, ExternalCohort]:
        for name in cohorts:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(
                    f"cohort name {name!r}: use letters, digits, '_' and '-' (it names a folder)"
                )
        return cohorts


