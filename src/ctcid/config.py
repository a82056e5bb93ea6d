"""The one place that reads params.yaml.

Every step receives a typed, validated section of :class:`Params`; nothing else in the package
opens the YAML file. Validation errors name the dotted key and the offending value so that a
typo in a lab's own configuration is found in seconds, not after an hour of training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ctcid.contracts import BACKBONES, Backbone, Init, LabelSource, Negatives

DEFAULT_PARAMS = Path("params.yaml")

# Where the shared infrastructure lives is a deployment's secret, not a result-changing parameter:
# these variables override params.yaml at run time (CI takes them from repository secrets), are
# never written back by 'ctcid show-params', and are no DVC params, so moving stores re-runs nothing.
ENVIRONMENT_OVERRIDES = {
    "CTCID_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "CTCID_MLFLOW_ARTIFACT_LOCATION": ("mlflow", "artifact_location"),
    "CTCID_TUNE_STORAGE": ("tune", "storage"),
}

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


def _within(value: tuple[float, float], lowest: float, highest: float) -> tuple[float, float]:
    """An ordered [low, high] range inside [lowest, highest]."""
    if value[0] < lowest or value[1] > highest:
        raise ValueError(
            f"range must lie within [{lowest:g}, {highest:g}], got [{value[0]:g}, {value[1]:g}]"
        )
    return _ordered(value)


# Physically sensible limits of each [low, high] knob of the simulator.
_SIMULATE_RANGE_BOUNDS: dict[str, tuple[float, float]] = {
    "leukocyte_radius": (2.0, 100.0),
    "ctc_radius": (2.0, 100.0),
    "debris_radius": (0.5, 20.0),
    "cytoplasm_ratio": (1.0, 3.0),
    "spot_sigma": (0.3, 5.0),
    "spot_brightness": (0.01, 10.0),
    "speckle_brightness": (0.01, 10.0),
    "dapi_counts": (1.0, 60000.0),
    "cd45_counts": (1.0, 60000.0),
    "cd45_dim_fraction": (0.0, 1.0),
    "background_counts": (0.0, 60000.0),
    "exposure_range": (0.01, 10.0),
}


class SiteOptics(_Section):
    """Ranges from which each simulated site other than site 0 draws its microscope, camera and stain.

    Factors multiply the corresponding ``simulate.*`` setting of site 0; the others replace it.
    """

    blur_sigma: Range = (0.6, 1.6)  # px, replaces simulate.blur_sigma
    exposure_factor: Range = (0.6, 1.8)  # x simulate.exposure_range
    background_factor: Range = (0.8, 2.0)  # x simulate.background_counts
    read_noise: Range = (8.0, 35.0)  # counts, replaces simulate.read_noise
    gain: Range = (1.5, 5.0)  # counts per photo-electron, replaces simulate.gain
    spot_brightness_factor: Range = (0.6, 1.1)  # x simulate.spot_brightness (the CEP8 probe)
    cd45_factor: Range = (0.5, 1.1)  # x simulate.cd45_counts (the CD45 stain)
    misregistration_px: Range = (0.5, 2.5)  # px, replaces simulate.misregistration_px
    bleed_through: Range = (0.0, 0.08)  # replaces simulate.bleed_through

    @field_validator("*")
    @classmethod
    def _site_ranges(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0:
            raise ValueError(f"range must not be negative, got [{v[0]:g}, {v[1]:g}]")
        return _ordered(v)


class ArtefactParams(_Section):
    """The hard cohort's failure modes of real imFISH slides (docs/simulator.md#hard-cohort), all off.

    With every knob at its default the simulator draws no extra random number, so the default
    cohort stays byte-identical; ``configs/hard.yaml`` turns them on.
    """

    # clumps of >= 3 touching or overlapping cells, drawn on top of the sample's cells
    clumps_mean: Annotated[float, Field(ge=0.0, le=50.0)] = 0.0  # per sample, Poisson
    clump_size: IntRange = (3, 6)
    clump_ctc_prob: Probability = 0.5  # a clump forms around one of the sample's single CTCs
    clump_overlap: Range = (0.8, 1.0)  # centre distance of clump neighbours / their nuclear radius sum
    # nuclei
    dim_nucleus_prob: Probability = 0.0  # weakly stained or hypochromatic nuclei
    dim_nucleus_scale: Range = (0.25, 0.5)  # their DAPI level, x the normal one
    apoptotic_prob: Probability = 0.0  # leukocytes: half pyknotic (small, bright), half fragmented
    fragments: IntRange = (3, 5)  # nuclear fragments of a fragmented (karyorrhectic) nucleus
    micronucleus_prob: Probability = 0.0  # a micronucleus beside the nucleus (CTCs; other cells a fifth)
    # focus and background
    defocus_prob: Probability = 0.0  # cells lying out of the focal plane: the whole cell blurred
    defocus_sigma: Range = (1.2, 2.2)  # px, their extra blur
    uneven_background: Annotated[float, Field(ge=0.0, le=20.0)] = 0.0  # haze peak, x the slide background
    # FISH
    split_signal_prob: Probability = 0.0  # per CEP8 copy: imaged as two close spots (sister chromatids)
    split_distance: Range = (2.0, 3.0)  # px between the two halves (below the distinct-copy spacing)
    nuclear_speck_mean: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # cross-hybridisation specks/nucleus
    nuclear_speck_brightness: Range = (0.08, 0.25)  # their peak, x spot_peak
    # CD45 and look-alikes
    cd45_partial_prob: Probability = 0.0  # CD45+ cells whose ring covers only an arc
    cd45_arc: Range = (0.3, 0.6)  # share of the ring that stays
    lookalike_share: Probability = 0.0  # of non-CTC cells: CTC-sized, >= 3 copies, CD45 faint
    lookalike_cd45_fraction: Range = (0.06, 0.15)  # their CD45 level, x cd45_counts
    endothelial_share: Probability = 0.0  # of non-CTC cells: large elongated CD45-negative, 2 copies
    polyploid_copies: IntRange = (3, 3)  # copies of aneuploid_cd45pos cells; [3, 4] = polyploid, larger

    @field_validator(
        "clump_overlap", "dim_nucleus_scale", "defocus_sigma", "split_distance",
        "nuclear_speck_brightness", "cd45_arc", "lookalike_cd45_fraction",
    )
    @classmethod
    def _artefact_ranges(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return _within(v, *_ARTEFACT_RANGE_BOUNDS[info.field_name])

    @field_validator("clump_size", "fragments", "polyploid_copies")
    @classmethod
    def _artefact_int_ranges(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        bounds = {"clump_size": (3, 12), "fragments": (2, 8), "polyploid_copies": (3, 8)}
        return _within(v, *bounds[info.field_name])

    @field_validator("endothelial_share")
    @classmethod
    def _shares_fit(cls, v: float, info: ValidationInfo) -> float:
        total = v + info.data.get("lookalike_share", 0.0)
        if total > 1.0:
            raise ValueError(f"lookalike_share + endothelial_share must be <= 1, got {total:g}")
        return v

    @property
    def enabled(self) -> bool:
        """Whether any artefact is on (the simulator then also writes artefacts.csv)."""
        return self != ArtefactParams()


_ARTEFACT_RANGE_BOUNDS: dict[str, tuple[float, float]] = {
    "clump_overlap": (0.3, 1.1),
    "dim_nucleus_scale": (0.05, 1.0),
    "defocus_sigma": (0.3, 6.0),
    "split_distance": (0.5, 6.0),
    "nuclear_speck_brightness": (0.01, 2.0),
    "cd45_arc": (0.05, 1.0),
    "lookalike_cd45_fraction": (0.0, 1.0),
}


class SimulateParams(_Section):
    """Knobs of the imFISH field simulator; docs/simulator.md explains the physics of each.

    Intensities are camera counts (16-bit) at exposure 1.0 and full illumination, above the camera
    offset. Radii and distances are pixels.
    """

    # cohort
    n_samples: PositiveInt = 100
    fields_per_sample: IntRange = (1, 3)
    field_size: Annotated[int, Field(ge=64, le=4096)] = 512
    # CTCs per patient ~ NegBin(mean, dispersion), capped: many patients at 0, a few with hundreds
    ctc_burden_mean: NonNegative = 5.0
    ctc_burden_dispersion: Annotated[float, Field(gt=0.0)] = 0.2
    ctc_burden_max: Annotated[int, Field(ge=0)] = 318
    ctc_cluster_prob: Probability = 0.15
    ctc_cluster_size: IntRange = (2, 4)
    # non-CTC cells per patient ~ Poisson(mean) left after CD45 bead depletion, and their make-up
    background_cells_mean: Annotated[float, Field(gt=0.0)] = 80.0
    hard_negative_share: Probability = 0.06
    hard_negative_large_prob: Probability = 0.35
    cd45_dim_share: Probability = 0.08
    cd45pos_aneuploid_share: Probability = 0.03
    debris_share: Probability = 0.05
    touching_share: Probability = 0.08
    # nuclei and cells
    leukocyte_radius: Range = (6.0, 8.0)
    ctc_radius: Range = (9.0, 14.0)
    debris_radius: Range = (1.5, 3.5)
    ctc_irregularity: Annotated[float, Field(ge=0.0, le=0.5)] = 0.18
    cytoplasm_ratio: Range = (1.25, 1.6)
    ctc_cep8_copies: IntRange = (3, 8)
    ctc_cep8_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # FISH spots
    spot_sigma: Range = (0.8, 1.2)
    spot_peak: Annotated[float, Field(gt=0.0, le=60000.0)] = 3000.0
    spot_brightness: Range = (0.5, 1.4)
    spot_dim_prob: Probability = 0.08
    spot_dim_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    spot_overlap_prob: Probability = 0.05
    spot_edge_prob: Probability = 0.15
    speckle_density: Annotated[float, Field(ge=0.0, le=0.01)] = 2.0e-4
    speckle_brightness: Range = (0.15, 0.6)
    # stains and imaging
    dapi_counts: Range = (3000.0, 7000.0)
    cd45_counts: Range = (1500.0, 4000.0)
    cd45_dim_fraction: Range = (0.12, 0.3)
    debris_autofluorescence: Probability = 0.15
    background_counts: Range = (150.0, 350.0)
    camera_offset: Annotated[float, Field(ge=0.0, le=10000.0)] = 100.0
    exposure_range: Range = (0.7, 1.3)
    illumination_falloff: Annotated[float, Field(ge=0.0, le=0.7)] = 0.25
    gain: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    read_noise: Annotated[float, Field(ge=0.0, le=1000.0)] = 12.0
    blur_sigma: Annotated[float, Field(ge=0.0, le=5.0)] = 0.8
    misregistration_px: Annotated[float, Field(ge=0.0, le=5.0)] = 1.0
    bleed_through: Annotated[float, Field(ge=0.0, le=0.5)] = 0.03
    workers: Annotated[int, Field(ge=0)] = 0  # 0 = one per CPU core
    # multi-site training data (docs/simulator.md#sites): sample k is imaged at site k % sites; site 0
    # is the optics above, every other site draws its own optics from site_optics (domain
    # randomisation). 1 = one site, as before.
    sites: Annotated[int, Field(ge=1, le=64)] = 1
    site_optics: SiteOptics = Field(default_factory=lambda: SiteOptics())
    # the hard cohort's artefacts (docs/simulator.md#hard-cohort), all off by default; configs/hard.yaml
    artefacts: ArtefactParams = Field(default_factory=lambda: ArtefactParams())

    @field_validator(*_SIMULATE_RANGE_BOUNDS)
    @classmethod
    def _ranges(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return _within(v, *_SIMULATE_RANGE_BOUNDS[info.field_name])

    @field_validator("fields_per_sample", "ctc_cluster_size", "ctc_cep8_copies")
    @classmethod
    def _int_ranges(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        lowest = {"fields_per_sample": 1, "ctc_cluster_size": 2, "ctc_cep8_copies": 3}[info.field_name]
        if v[0] < lowest:
            raise ValueError(f"{info.field_name} must start at {lowest} or more, got [{v[0]}, {v[1]}]")
        _ordered(v)
        return v

    @field_validator("debris_share")
    @classmethod
    def _shares_fit(cls, v: float, info: ValidationInfo) -> float:
        # checked on the last share so that the error names a key, not the whole section
        shares = v + info.data.get("hard_negative_share", 0.0) + info.data.get("cd45pos_aneuploid_share", 0.0)
        if shares > 1.0:
            raise ValueError(
                "hard_negative_share + cd45pos_aneuploid_share + debris_share must be <= 1 "
                f"(the rest are leukocytes), got {shares:g}"
            )
        return v


class SegmentParams(_Section):
    """The paper's OpenCV nucleus pipeline plus watershed splitting and per-cell features.

    docs/segmentation.md explains every knob; intensities are in background-noise units or
    relative to the cell's own signal, so that one setting holds across exposures.
    """

    crop_size: Annotated[int, Field(ge=8, le=512)] = 40
    # nucleus detection on DAPI
    gaussian_ksize: Annotated[int, Field(ge=1, le=31)] = 5
    threshold_min_snr: Annotated[float, Field(gt=0.0, le=100.0)] = 6.0
    threshold_scale: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8
    morph_ksize: Annotated[int, Field(ge=1, le=15)] = 3
    morph_iterations: Annotated[int, Field(ge=1, le=8)] = 1
    min_area: PositiveInt = 40
    max_area: PositiveInt = 2500
    # uneven background and dim nuclei (docs/segmentation.md#hard-slides); 0 = off, the default
    background_radius: Annotated[float, Field(ge=0.0, le=500.0)] = 0.0  # px, smooth background removed
    dim_nuclei_snr: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0  # second pass for dim nuclei
    # touching nuclei
    split_touching: bool = True
    watershed_min_distance: Annotated[float, Field(gt=0.0, le=50.0)] = 4.0
    min_peak_radius: Annotated[float, Field(gt=0.0, le=50.0)] = 3.0
    split_min_separation: Annotated[float, Field(gt=0.0, le=2.0)] = 0.575
    # CEP8 spots
    spot_sigma: Annotated[float, Field(gt=0.0, le=10.0)] = 0.7
    spot_snr: Annotated[float, Field(gt=0.0, le=1000.0)] = 6.0
    spot_min_relative: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    spot_mass_sigma: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # > 0: min_relative on light, not peak
    spot_min_distance: Annotated[int, Field(ge=1, le=20)] = 1
    spot_min_dip: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15
    spot_merge_px: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # split signals: closer maxima count once
    spot_margin: Annotated[int, Field(ge=0, le=10)] = 2
    # CD45 membrane ring
    cd45_ring_gap: Annotated[int, Field(ge=0, le=20)] = 1
    cd45_ring_width: Annotated[int, Field(ge=1, le=30)] = 5
    cd45_sectors: Annotated[int, Field(ge=1, le=64)] = 8
    cd45_threshold: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0
    rule_min_spots: Annotated[int, Field(ge=1, le=50)] = 3
    # bad input
    dark_min_range: NonNegative = 50.0
    max_saturated_share: Probability = 0.05
    quarantine_max_share: Probability = 0.2
    # ground truth
    match_max_distance: Annotated[float, Field(gt=0.0, le=100.0)] = 6.0
    workers: Annotated[int, Field(ge=0)] = 0  # 0 = one per CPU core

    @field_validator("gaussian_ksize", "morph_ksize")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (OpenCV kernel size)")
        return v

    @model_validator(mode="after")
    def _area_range(self) -> SegmentParams:
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


PixelLevel = Annotated[float, Field(ge=0.0, le=65535.0)]  # 16-bit camera counts


class ValidateParams(_Section):
    """Thresholds of the Great Expectations data gate; docs/validation.md explains each check."""

    # cohort: CTC share of cells (true_label where known, else rule_label)
    ctc_share: Range = (0.01, 0.20)
    # CTC-labelled cells the split's label source must offer (the gate also asks for enough for
    # split.n_folds folds after the test hold-out)
    min_positives: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    cells_per_sample: IntRange = (1, 5000)
    max_quarantined_share: Probability = 0.2
    # manifest features
    max_circularity: Annotated[float, Field(ge=1.0, le=10.0)] = 1.5
    max_cep8_spots: Annotated[int, Field(ge=3, le=1000)] = 50
    # crops
    min_crop_range: PixelLevel = 20.0
    min_dynamic_range: PixelLevel = 50.0
    min_marker_range_share: Probability = 0.5
    max_saturated_share: Probability = 0.05

    @field_validator("ctc_share")
    @classmethod
    def _share_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0.0 or v[1] > 1.0:
            raise ValueError(f"shares must lie within [0, 1], got [{v[0]:g}, {v[1]:g}]")
        return _ordered(v)

    @field_validator("cells_per_sample")
    @classmethod
    def _count_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0:
            raise ValueError(f"cell counts cannot be negative, got [{v[0]}, {v[1]}]")
        _ordered(v)
        return v


class SplitParams(_Section):
    """Train/test split, class balance and CV folds; docs/evaluation.md explains each choice."""

    # sample: every patient's cells on one side (honest for new patients); cell: the paper's split
    by: Literal["sample", "cell"] = "sample"
    # share of labelled cells held out; by sample it is met to the nearest 1/round(1/test_size) fold
    test_size: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    # CV folds over the training patients (the paper: 5)
    n_folds: Annotated[int, Field(ge=2, le=20)] = 5
    # truth: annotated true_label; rule: the segmentation's rule_label (no annotations needed)
    label_source: LabelSource = "truth"
    # samples: n_folds folds of whole patients; sites: leave-one-site-out (one fold per training
    # site of the manifest's site column, n_folds ignored), so selection sees an unseen site
    cv: Literal["samples", "sites"] = "samples"

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        if isinstance(values, dict) and "balance" in values:
            raise ValueError(
                "split.balance moved to train.negatives (downsample | class_weight | resample), "
                "which tuning can choose per backbone; delete split.balance"
            )
        return values


class SiteShift(_Section):
    """Another site's optics and staining, applied on the fly to training crops (standardised units).

    Each crop is shifted with probability ``prob``; every knob draws its own value per crop (per
    channel where it says so) uniformly from its range. 0 everywhere (or prob 0) = no site shift.
    """

    prob: Probability = 0.8  # share of training crops shifted; the rest stay as imaged
    offset: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05  # per channel, +- this, standardised units
    blur_sigma: Range = (0.0, 0.5)  # px of the model input, an extra Gaussian blur
    read_noise: Range = (0.0, 0.05)  # sigma of added Gaussian noise, standardised units
    shot_noise: Range = (0.0, 0.03)  # Poisson-like: added variance = this x signal, per channel
    spot_dimming: Range = (0.85, 1.0)  # CEP8 channel factor (a weaker probe or a dimmer spot)
    misregistration_px: Annotated[float, Field(ge=0.0, le=8.0)] = 0.75  # max CEP8/CD45 shift vs DAPI
    # standardised DAPI (CEP8) added to CEP8 (CD45): 0.2 is about a 4 % leak of counts from a
    # nucleus into a probe channel whose scale is a fifth of DAPI's
    bleed_through: Range = (0.0, 0.2)

    @field_validator("blur_sigma", "read_noise", "shot_noise", "spot_dimming", "bleed_through")
    @classmethod
    def _shift_ranges(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        highest = {"spot_dimming": 1.0, "blur_sigma": 8.0}.get(info.field_name, 1.0)
        if v[0] < 0 or v[1] > highest:
            raise ValueError(f"range must lie within [0, {highest:g}], got [{v[0]:g}, {v[1]:g}]")
        return _ordered(v)


class TrainParams(_Section):
    """CNN training, cross-validation and test evaluation; docs/training.md explains each choice."""

    # one DVC tune and train stage per backbone; evaluate selects among them on the CV objective
    # (tune.objective), CV AUC breaking ties
    backbones: list[Backbone] = Field(default_factory=lambda: list(BACKBONES), min_length=1)
    # scratch: random weights; pretrained: ImageNet weights from weights_dir or the torch hub cache;
    # registry: fine-tune the registered champion (mlflow.model_name@champion, same backbone)
    init: Init = "scratch"
    # downsample: the paper's one-off balanced draw of negatives; class_weight: every negative, loss
    # weighted to balance; resample: a fresh balanced draw of negatives every epoch
    negatives: Negatives = "downsample"
    weights_dir: str | None = None  # None: <torch hub dir>/checkpoints; nothing is ever downloaded
    # crops are resized once to input_size x input_size (the paper: 224 px, a GPU setting)
    input_size: Annotated[int, Field(ge=8, le=512)] = 32
    # most epochs per fit; early stopping on validation AUC ends a fold after `patience` flat epochs
    epochs: Annotated[int, Field(ge=1, le=1000)] = 5
    patience: Annotated[int, Field(ge=1, le=1000)] = 2
    # >= 2: BatchNorm cannot normalise one crop with a 1x1 feature map
    batch_size: Annotated[int, Field(ge=2, le=4096)] = 64
    # AdamW
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-4
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-4
    # flips and 90-degree rotations, plus a per-channel gain in [1 - jitter, 1 + jitter]
    augment: bool = True
    intensity_jitter: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    # field standardisation (docs/training.md#intensity): every crop as (counts - its field's
    # background) / its field's scale, estimated at segmentation; false = raw counts (older models)
    standardise: bool = True
    # site-shift augmentation on top of augment (docs/training.md#site-shift); train.augment: false
    # turns it off too
    site_shift: SiteShift = Field(default_factory=lambda: SiteShift())
    # operating threshold: the highest one reaching this sensitivity on out-of-fold predictions
    target_sensitivity: Annotated[float, Field(gt=0.0, le=1.0)] = 0.97
    # bootstrap resamples for the 95 % confidence intervals of the test metrics (0: none)
    bootstrap: Annotated[int, Field(ge=0, le=100_000)] = 1000
    threads: Annotated[int, Field(ge=0, le=1024)] = 0  # torch CPU threads; 0 = torch default
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present

    def with_values(self, values: dict[str, Any], crop_size: int) -> TrainParams:
        """These settings with a trial's values, validated; ``input_size: native`` is the crop size."""
        update = dict(values)
        if update.get("input_size") == NATIVE_SIZE:
            update["input_size"] = crop_size
        return TrainParams.model_validate({**self.model_dump(), **update})

    @field_validator("backbones")
    @classmethod
    def _unique_backbones(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"backbones must not repeat, got {v}")
        return v


# train.* keys a study may search; the rest of train.* holds for every trial.
TUNABLE = (
    "learning_rate", "weight_decay", "batch_size", "epochs", "patience", "input_size",
    "augment", "intensity_jitter", "negatives", "init",
)
# input_size choice meaning "segment.crop_size": the crops as cut, no resizing
NATIVE_SIZE = "native"


class Dimension(_Section):
    """One searched hyper-parameter: a range ``low``/``high`` (``log`` for a log scale) or ``choices``.

    Ranges of integer keys (epochs, batch_size, patience, input_size) draw integers.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices, or low and high (and log), not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices must not repeat, got {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got [{self.low:g}, {self.high:g}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self

    def candidates(self) -> list[bool | int | float | str]:
        """The values to check against train.<key>: every choice, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]  # type: ignore[list-item]


def _default_space() -> dict[str, Dimension]:
    return {
        "learning_rate": Dimension(low=1e-4, high=3e-3, log=True),
        "weight_decay": Dimension(low=1e-6, high=1e-2, log=True),
        "batch_size": Dimension(choices=[32, 64]),
        "epochs": Dimension(low=3, high=8),
        "input_size": Dimension(choices=[32, NATIVE_SIZE]),
        "intensity_jitter": Dimension(low=0.0, high=0.25),
        "negatives": Dimension(choices=["downsample", "class_weight", "resample"]),
        "init": Dimension(choices=["scratch", "pretrained", "registry"]),
    }


# specificity_at_sensitivity: pooled out-of-fold specificity at the operating threshold;
# worst_fold_specificity: the lowest fold's specificity at that threshold (with split.cv: sites, the
# worst unseen site); auc: mean fold AUC
TuneObjective = Literal["specificity_at_sensitivity", "worst_fold_specificity", "auc"]


class TuneParams(_Section):
    """Optuna tuning of each backbone under the split's CV folds (docs/tuning.md)."""

    # specificity_at_sensitivity: pooled out-of-fold specificity at train.target_sensitivity (CV AUC
    # breaks ties); auc: mean fold AUC
    objective: TuneObjective = "specificity_at_sensitivity"
    # finished (complete or pruned) trials a backbone's study runs to, counting earlier runs and
    # other workers; 0: no tuning, train uses train.* as given
    n_trials: Annotated[int, Field(ge=0, le=100_000)] = 2
    # wall-clock budget of one 'ctcid tune' per backbone; a trial still running then is pruned
    timeout_s: Annotated[float, Field(gt=0.0, le=30 * 86400.0)] | None = 100.0
    # Optuna RDB storage: sqlite:///optuna.db (relative to the working directory) or
    # postgresql+psycopg://user@host/db, shared by workers on several machines
    storage: Annotated[str, Field(min_length=1)] = "sqlite:///optuna.db"
    study_prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "ctcid"
    # trial 0 of a new study: train.* as given (the untuned baseline every tuned trial must beat)
    baseline_trial: bool = True
    # known-good points of the space queued right after the baseline (Optuna's enqueue_trial):
    # each runs train.* with the point's values
    enqueue: list[dict[str, bool | int | float | str]] = Field(default_factory=list)
    # TPE draws this many trials at random before it models the search space
    startup_trials: Annotated[int, Field(ge=1, le=1000)] = 2
    # median: stop a trial whose running CV figure after a fold is below the median of the complete
    # trials at that fold; percentile: keep only trials in the top pruner_percentile % at that
    # fold (25 prunes more than median); hyperband; none
    pruner: Literal["median", "percentile", "hyperband", "none"] = "median"
    pruner_percentile: Annotated[float, Field(gt=0.0, lt=100.0)] = 25.0
    pruner_startup_trials: Annotated[int, Field(ge=0, le=1000)] = 2  # complete trials before pruning starts
    # a trial whose worker sends no heartbeat for 2x this is failed (worker killed) and retried
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 30
    space: dict[str, Dimension] = Field(default_factory=_default_space)

    @model_validator(mode="after")
    def _enqueued_in_space(self) -> TuneParams:
        for number, values in enumerate(self.enqueue):
            for key, value in values.items():
                dimension = self.space.get(key)
                if dimension is None:
                    raise ValueError(f"enqueue[{number}].{key}: not a key of tune.space")
                inside = (
                    value in dimension.choices
                    if dimension.choices is not None
                    else isinstance(value, int | float) and dimension.low <= value <= dimension.high  # type: ignore[operator]
                )
                if not inside:
                    raise ValueError(f"enqueue[{number}].{key} = {value!r}: outside tune.space.{key}")
        return self

    @field_validator("space")
    @classmethod
    def _space_fits_train(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for key, dimension in space.items():
            if key not in TUNABLE:
                raise ValueError(f"{key!r} cannot be tuned; tunable train keys: {', '.join(TUNABLE)}")
            if dimension.choices is None and key in ("augment", "negatives", "init"):
                raise ValueError(f"{key} takes choices, not a range")
            for value in dimension.candidates():
                _check_train_value(key, value)
        return space


_INTEGER_KEYS = ("epochs", "patience", "batch_size", "input_size")


def _check_train_value(key: str, value: object) -> None:
    """A searched value must be a valid ``train.<key>``: the same bounds as a hand-set one."""
    if key == "input_size" and value == NATIVE_SIZE:
        return
    if key in _INTEGER_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            hint = " or 'native'" if key == "input_size" else ""
            raise ValueError(f"{key} = {value!r}: must be a whole number{hint}")
        value = int(value)
    try:
        TrainParams.model_validate({key: value})
    except ValidationError as error:
        raise ValueError(f"{key} = {value!r}: {error.errors()[0]['msg']} (as train.{key})") from None


class MlflowParams(_Section):
    """Experiment tracking; the default is embedded (SQLite + local folder), a server is config only."""

    # any MLflow tracking URI: sqlite:///mlflow.db (relative to the working directory, the
    # repository root under dvc), postgresql://..., http://tracking-server:5000
    tracking_uri: Annotated[str, Field(min_length=1)] = "sqlite:///mlflow.db"
    # artifact root of a newly created experiment: a local folder or a URI (s3://..., file://...)
    artifact_location: Annotated[str, Field(min_length=1)] = "mlruns"
    experiment: Annotated[str, Field(min_length=1)] = "ctcid"
    # registered model that 'ctcid register' adds versions to and 'ctcid promote' gates
    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = (
        "ctcid-classifier"
    )


PromotionMetric = Literal["auc", "sensitivity", "specificity", "accuracy", "f1"]


class RegistryParams(_Section):
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
    # false: "more CEP8 spots raise the score" is measured and shown but does not decide. The default
    # CNNs call nearly every CTC-sized CD45-negative diploid nucleus a CTC already (probe scores
    # about 0.95), so extra spots cannot move them: a known limit (docs/results.md, issue 14), not a
    # regression a gate could act on. true: the check decides, as the other two do.
    spot_check_decides: bool = False
    # worst-site guard-rail: the challenger's specificity at its operating threshold on every
    # external cohort (external.cohorts, prepared under data/external) must reach this; null = off
    min_site_specificity: Probability | None = 0.9


class ServingParams(_Section):
    """The BentoML service: where it listens, what it accepts, how it batches (docs/serving.md).

    ``ctcid package`` bakes these into the Bento (as its build arguments), so a served Bento keeps
    the limits it was built with; change one, then package and restart.
    """

    # loopback by default: the service has no authentication, so exposing it is a decision
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # BentoML's model and Bento store, relative to the working directory (the repository root)
    bentoml_home: Annotated[str, Field(min_length=1)] = ".bentoml"
    # largest field side in pixels (checked from the TIFF header before any pixel is decoded)
    max_field_px: Annotated[int, Field(ge=64, le=65536)] = 4096
    max_upload_mb: Annotated[float, Field(gt=0.0, le=4096.0)] = 64.0
    max_crops: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    max_fields: Annotated[int, Field(ge=1, le=1000)] = 32  # fields per /count_sample request
    # adaptive batching of crop scoring across requests (/classify and the fields' crops)
    batching: bool = True
    max_batch_size: Annotated[int, Field(ge=2, le=100_000)] = 256
    max_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 2000
    # a request that runs longer is answered 504 by BentoML, and the worker goes on to the next
    timeout_s: Annotated[int, Field(ge=1, le=3600)] = 120
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # processes of the API service


class DriftParams(_Section):
    """Out-of-distribution warnings per field and sample (docs/evaluation.md#drift).

    A field's image statistics and crop statistics are compared with the training fields' by a
    Mahalanobis distance under a Ledoit-Wolf covariance; the flag threshold is this quantile of the
    training fields' own out-of-fold distances.
    """

    quantile: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.99
    folds: Annotated[int, Field(ge=2, le=20)] = 5


class ExternalCohort(_Section):
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


class ExternalParams(_Section):
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


class Params(_Section):
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
        for name, cohort in self.external.cohorts.items():
            if cohort.seed == self.seed:
                # the same seed draws the training patients again: an "external" cohort of copies
                raise ValueError(f"external.cohorts.{name}.seed must differ from seed ({self.seed})")
            try:
                self.for_cohort(name)
            except ValidationError as error:
                item = error.errors()[0]
                key = ".".join(str(p) for p in item["loc"])
                raise ValueError(
                    f"external.cohorts.{name}.simulate.{key} = {item.get('input')!r}: {item['msg']}"
                ) from None
        return self

    def channel_index(self, name: str) -> int:
        return self.channels.index(name)

    def for_cohort(self, name: str) -> Params:
        """These params with a simulated external cohort's seed and simulator overrides applied."""
        cohort = self.external.cohorts[name]
        if not cohort.simulated:
            return self
        simulate = SimulateParams.model_validate({**self.simulate.model_dump(), **cohort.simulate})
        return self.model_copy(update={"seed": cohort.seed, "simulate": simulate})


def _format_error(source: str, error: ValidationError) -> str:
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
        raise ConfigError(_format_error(source, error)) from None


def redact_url(url: str) -> str:
    """A database or server URL without its password, for messages, reports and files."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def with_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with :data:`ENVIRONMENT_OVERRIDES` applied, and the names of the variables used."""
    used = [name for name in ENVIRONMENT_OVERRIDES if environ.get(name, "").strip()]
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for name in used:
        section, key = ENVIRONMENT_OVERRIDES[name]
        if not isinstance(merged.setdefault(section, {}), dict):
            continue  # a malformed section: validation names it
        merged[section][key] = environ[name].strip()
    return merged, used


def merge_overlay(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay``'s keys: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_overlay(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_raw(path: str | Path) -> dict[str, Any]:
    """A params file's YAML mapping, unvalidated; a ConfigError names the file otherwise."""
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
    return raw


def load_params(path: str | Path = DEFAULT_PARAMS, environ: Mapping[str, str] | None = None) -> Params:
    """Read and validate a params file; raises ConfigError naming the bad key and value.

    ``environ`` (default ``os.environ``) may override the infrastructure keys named in
    :data:`ENVIRONMENT_OVERRIDES`; pass ``{}`` to read the file alone.
    """
    path = Path(path)
    raw, used = with_environment(read_raw(path), os.environ if environ is None else environ)
    source = f"{path} with {', '.join(used)} from the environment" if used else str(path)
    return parse_params(raw, source)
