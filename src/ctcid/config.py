"""The one place that reads params.yaml.

Every step receives a typed, validated section of :class:`Params`; nothing else in the package
opens the YAML file. Validation errors name the dotted key and the offending value so that a
typo in a lab's own configuration is found in seconds, not after an hour of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Range = tuple[float, float]
IntRange = tuple[int, int]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or holds an invalid value."""


class _Section(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if low > high:
        raise ValueError(f"range must be [low, high] with low <= high, got [{low}, {high}]")
    return value


class SimulateParams(_Section):
    """Knobs of the imFISH field simulator (see docs/simulator.md for the physics of each)."""

    n_samples: PositiveInt = 100
    fields_per_sample: IntRange = (1, 3)
    field_size: Annotated[int, Field(ge=64, le=4096)] = 512
    # cohort: CTCs per patient ~ NegBin(mean, dispersion), heavy-tailed like the paper's 0-318
    ctc_burden_mean: NonNegative = 4.0
    ctc_burden_dispersion: Annotated[float, Field(gt=0.0)] = 0.35
    ctc_burden_max: PositiveInt = 318
    ctc_cluster_prob: Probability = 0.15
    # non-CTC cells per patient ~ Poisson(mean) after CD45 bead depletion
    background_cells_mean: Annotated[float, Field(gt=0.0)] = 80.0
    hard_negative_share: Probability = 0.06
    cd45_dim_share: Probability = 0.08
    cd45pos_aneuploid_share: Probability = 0.03
    debris_share: Probability = 0.05
    touching_share: Probability = 0.08
    # nuclei, radius in pixels
    leukocyte_radius: Range = (6.0, 8.0)
    ctc_radius: Range = (9.0, 14.0)
    ctc_irregularity: NonNegative = 0.18
    # FISH spots
    spot_sigma: Range = (0.8, 1.2)
    spot_brightness: Range = (0.5, 1.4)
    spot_dim_prob: Probability = 0.08
    spot_overlap_prob: Probability = 0.05
    speckle_density: NonNegative = 2.0e-4
    # imaging
    exposure_range: Range = (0.7, 1.3)
    illumination_falloff: Probability = 0.25
    read_noise: NonNegative = 60.0
    photons_per_unit: Annotated[float, Field(gt=0.0)] = 1500.0
    blur_sigma: NonNegative = 0.8
    misregistration_px: NonNegative = 1.0
    bleed_through: Probability = 0.03

    @field_validator("leukocyte_radius", "ctc_radius", "spot_sigma", "spot_brightness", "exposure_range")
    @classmethod
    def _ranges(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ordered(v)

    @field_validator("fields_per_sample")
    @classmethod
    def _fields_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1:
            raise ValueError("fields_per_sample must start at 1 or more")
        _ordered(v)
        return v


class SegmentParams(_Section):
    """The paper's OpenCV nucleus pipeline plus watershed splitting and per-cell features."""

    crop_size: Annotated[int, Field(ge=8, le=512)] = 40
    gaussian_ksize: Annotated[int, Field(ge=1)] = 5
    min_area: PositiveInt = 40
    max_area: PositiveInt = 2500
    split_touching: bool = True
    watershed_min_distance: Annotated[float, Field(gt=0.0)] = 4.0
    spot_sigma: Annotated[float, Field(gt=0.0)] = 1.0
    spot_threshold: Annotated[float, Field(gt=0.0)] = 0.08
    spot_min_distance: PositiveInt = 2
    cd45_ring_width: PositiveInt = 4
    cd45_threshold: float = 0.15
    quarantine_max_share: Probability = 0.2
    match_max_distance: Annotated[float, Field(gt=0.0)] = 6.0
    workers: Annotated[int, Field(ge=0)] = 0  # 0 = one per CPU core

    @field_validator("gaussian_ksize")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("gaussian_ksize must be odd (OpenCV kernel)")
        return v


class ValidateParams(_Section):
    """Thresholds of the Great Expectations data gate."""

    ctc_share: Range = (0.01, 0.20)
    min_positives: PositiveInt = 10
    cells_per_sample: Range = (1, 5000)
    max_quarantined_share: Probability = 0.2
    min_dynamic_range: NonNegative = 50.0
    max_saturated_share: Probability = 0.05


class SplitParams(_Section):
    by: Literal["sample", "cell"] = "sample"
    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    balance: Literal["downsample", "class_weight"] = "downsample"
    n_folds: Annotated[int, Field(ge=2)] = 5
    label_source: Literal["truth", "rule"] = "truth"


class TrainParams(_Section):
    backbones: list[Literal["vgg16", "vgg19", "resnet18", "resnet50", "alexnet"]] = Field(
        default_factory=lambda: ["vgg16", "vgg19", "resnet18", "resnet50", "alexnet"]
    )
    init: Literal["scratch", "pretrained"] = "scratch"
    weights_dir: str | None = None  # None: the local torch hub cache
    input_size: Annotated[int, Field(ge=8, le=512)] = 32
    epochs: PositiveInt = 6
    batch_size: PositiveInt = 64
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    weight_decay: NonNegative = 1e-4
    patience: PositiveInt = 3
    target_sensitivity: Probability = 0.97
    bootstrap: Annotated[int, Field(ge=0)] = 1000
    threads: Annotated[int, Field(ge=0)] = 0  # 0 = torch default


class MlflowParams(_Section):
    # Relative sqlite URIs resolve against the working directory (the repository root under dvc).
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlruns"
    experiment: str = "ctcid"
    model_name: str = "ctcid-classifier"


class Params(_Section):
    seed: Annotated[int, Field(ge=0)] = 42
    channels: list[str] = Field(default_factory=lambda: ["DAPI", "CEP8", "CD45"])
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    segment: SegmentParams = Field(default_factory=SegmentParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    mlflow: MlflowParams = Field(default_factory=MlflowParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _channels_complete(self) -> Params:
        required = {"DAPI", "CEP8", "CD45"}
        if set(self.channels) != required or len(self.channels) != 3:
            raise ValueError(f"channels must name DAPI, CEP8 and CD45 once each, got {self.channels}")
        return self

    def channel_index(self, name: str) -> int:
        return self.channels.index(name)


def _format_error(source: str, error: ValidationError, raw: dict[str, Any]) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        value = item.get("input", "<missing>")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {value!r}); check the spelling against params.yaml")
        else:
            lines.append(f"  {key} = {value!r}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "<params>") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_error(source, error, raw)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file; raises ConfigError naming the bad key and value."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file ({error.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))
