"""The ``external`` section: cohorts never trained on (docs/external.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from ctcid.config.base import Section
from ctcid.config.simulate import SimulateParams


class Repeatability(Section):
    """A cohort's repeatability study: its first ``specimens`` samples imaged ``images`` times in all.

    Each re-image is the same specimen (same cells, placement, stain and microscope) under new
    camera noise (:func:`ctcid.raw.simulate.simulate_sample`'s ``image``), so that the spread of a
    model's calls across them is the model's own, not the patients'.
    """

    specimens: Annotated[int, Field(ge=2)]  # the cohort's first k samples (S0000 ..) are re-imaged
    images: Annotated[int, Field(ge=2, le=10)]  # images per specimen in all, the original included


class ExternalCohort(Section):
    """A cohort the models never train on: simulated (``seed`` and ``simulate``) or a lab's ``folder``."""

    description: str = ""
    seed: Annotated[int, Field(ge=0)] | None = None  # simulated: the simulator's seed (not the training one)
    simulate: dict[str, Any] = Field(default_factory=dict)  # simulated: overrides of simulate.*
    folder: str | None = None  # a lab's images in the raw layout (<folder>/<sample>/<field>.tif)
    # a hold-out that no decision reads (not the promotion gate, not tuning, not model selection);
    # only the explicit 'ctcid audit' step scores it
    sealed: bool = False
    # the promotion gate's worst-site guard-rail (registry.min_site_specificity) scores it; false
    # keeps it an untouched hold-out that only 'ctcid external' reports; unset: guarded unless sealed
    guard: bool | None = None
    # simulated cohorts only: re-image its first samples (prepared under <cohort>/repeats/)
    repeatability: Repeatability | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ExternalCohort:
        if (self.folder is None) == (self.seed is None):
            raise ValueError("give either seed (a simulated cohort) or folder (a lab's images), not both")
        if self.folder is not None and self.simulate:
            raise ValueError("simulate overrides apply to simulated cohorts only; drop them or the folder")
        if self.folder is not None and self.repeatability is not None:
            raise ValueError(
                "repeatability applies to simulated cohorts only: a lab's re-imaged slides would need "
                "their own layout; drop repeatability or the folder"
            )
        return self

    @model_validator(mode="after")
    def _sealed_unguarded(self) -> ExternalCohort:
        if self.sealed and self.guard:
            raise ValueError(
                "a sealed cohort cannot be the promotion gate's guard: drop 'guard' or set it false"
            )
        return self

    @property
    def simulated(self) -> bool:
        return self.folder is None

    @property
    def guarded(self) -> bool:
        """Whether the promotion gate's worst-site guard-rail scores it: ``guard``; unset, unless sealed."""
        return not self.sealed if self.guard is None else self.guard

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

    def open_names(self) -> list[str]:
        """The cohorts that are not sealed, in params order: the ones decisions and reports may read."""
        return [name for name, cohort in self.cohorts.items() if not cohort.sealed]

    def sealed_names(self) -> list[str]:
        """The sealed cohorts, in params order: only 'ctcid audit' scores them."""
        return [name for name, cohort in self.cohorts.items() if cohort.sealed]


