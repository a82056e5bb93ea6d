"""The whole of params.yaml: every section, and the checks that span sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, ValidationError, model_validator

from ctcid.config.base import Section
from ctcid.config.drift import DriftParams
from ctcid.config.external import ExternalParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.registry import RegistryParams
from ctcid.config.segment import SegmentParams
from ctcid.config.serving import ServingParams
from ctcid.config.simulate import SimulateParams
from ctcid.config.split import SplitParams
from ctcid.config.train import TrainParams
from ctcid.config.tune import TuneParams
from ctcid.config.validate import ValidateParams


class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 42
    channels: list[str] = Field(default_factory=lambda: ["DAPI", "CEP8", "CD45"])
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    segment: SegmentParams = Field(default_factory=SegmentParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    mlflow: MlflowParams = Field(default_factory=MlflowParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    serving: ServingParams = Field(default_factory=ServingParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    external: ExternalParams = Field(default_factory=ExternalParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _channels_complete(self) -> Params:
        required = {"DAPI", "CEP8", "CD45"}
        if set(self.channels) != required or len(self.channels) != 3:
            raise ValueError(f"channels must name DAPI, CEP8 and CD45 once each, got {self.channels}")
        return self

    @model_validator(mode="after")
    def _cohorts_simulate(self) -> Params:
        cohorts = self.external.cohorts
        for name, cohort in cohorts.items():
            if cohort.seed == self.seed:
                # the same seed draws the training patients again: an "external" cohort of copies
                raise ValueError(f"external.cohorts.{name}.seed must differ from seed ({self.seed})")
            if cohort.sealed and cohort.seed is not None:
                # the same seed draws the same patients: a hold-out that shares them is not sealed
                for other, drawn in cohorts.items():
                    if other != name and drawn.seed == cohort.seed:
                        raise ValueError(
                            f"external.cohorts.{name} is sealed but shares its seed ({cohort.seed}) with "
                            f"external.cohorts.{other}, so both draw the same patients; give {name} a "
                            "seed of its own"
                        )
            try:
                simulate = self.for_cohort(name).simulate
            except ValidationError as error:
                item = error.errors()[0]
                key = ".".join(str(p) for p in item["loc"])
                raise ValueError(
                    f"external.cohorts.{name}.simulate.{key} = {item.get('input')!r}: {item['msg']}"
                ) from None
            repeats = cohort.repeatability
            if repeats is not None and repeats.specimens > simulate.n_samples:
                raise ValueError(
                    f"external.cohorts.{name}.repeatability.specimens = {repeats.specimens}: more than "
                    f"the cohort's {simulate.n_samples} samples (simulate.n_samples); re-image at most "
                    f"{simulate.n_samples}, or give the cohort more samples"
                )
        return self

    def channel_index(self, name: str) -> int:
        return self.channels.index(name)

    def for_cohort(self, name: str) -> Params:
        """These params with a simulated external cohort's seed and simulator overrides applied."""
        cohort = self.external.cohorts[name]
        if not cohort.simulated:
            return self
        return self.model_copy(update={"seed": cohort.seed, "simulate": cohort.simulation(self.simulate)})


