"""The ``train`` section: CNN training, cross-validation and test evaluation (docs/training.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ctcid.config.base import Probability, Range, Section, ordered
from ctcid.config.stage import view
from ctcid.contracts import BACKBONES, Backbone, Init, Negatives, Stem


class SiteShift(Section):
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
        return ordered(v)


class TrainParams(Section):
    """CNN training, cross-validation and test evaluation; docs/training.md explains each choice."""

    # one DVC tune and train stage per backbone; evaluate selects among them on the CV objective
    # (tune.objective), CV AUC breaking ties
    backbones: list[Backbone] = Field(default_factory=lambda: list(BACKBONES), min_length=1)
    # scratch: random weights; pretrained: ImageNet weights from weights_dir or the torch hub cache;
    # registry: fine-tune the registered champion (mlflow.model_name@champion, same backbone)
    init: Init = "scratch"
    # downsample: the paper's one-off balanced draw of negatives; class_weight: every negative, loss
    # weighted to balance; resample: a fresh balanced draw of negatives every epoch; hard: every
    # epoch all CTCs, every CD45-negative non-CTC (the segment step's CD45 call) and a fresh draw of
    # as many other negatives as there are CTCs (docs/training.md#negatives)
    negatives: Negatives = "downsample"
    # label-consistent counterfactuals per training CTC, made once per fit (docs/training.md#counterfactuals):
    # half are CD45-negative non-CTCs given CEP8 spots up to >= 3 copies (CTC), half are CTCs given a
    # CD45 ring (not CTC); 0 = off
    counterfactuals: Annotated[float, Field(ge=0.0, le=4.0)] = 0.0
    # weight of the auxiliary heads' loss (CEP8 copy number, CD45 status) beside the CTC loss; the
    # targets are the annotations' cep8_copies and cd45_status, else the segment step's spot count and
    # CD45 call; 0 = no auxiliary heads (docs/training.md#auxiliary-heads)
    aux_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    # standard: torchvision's stem; small: a 3x3 stride-1 first convolution and no early max-pool,
    # for 32-64 px crops whose FISH spots are 2-3 px wide (docs/training.md#stems)
    stem: Stem = "standard"
    # true: a fusion head reads the backbone's pooled features and the crop's CEP8 spot counts,
    # computed in the network the segment step's way (model/spot_layer.py; docs/training.md#spot-features)
    spot_features: bool = False
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
    # CUDA: deterministic kernels, no cuDNN benchmark search (slower; docs/benchmarks.md#gpu).
    # CPU runs are deterministic either way.
    deterministic: bool = True

    @field_validator("backbones")
    @classmethod
    def _unique_backbones(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"backbones must not repeat, got {v}")
        return v


# train.* keys a study may search; the rest of train.* holds for every trial.
TUNABLE = (
    "learning_rate", "weight_decay", "batch_size", "epochs", "patience", "input_size",
    "augment", "intensity_jitter", "negatives", "init", "counterfactuals", "aux_weight", "stem",
    "spot_features",
)
# input_size choice meaning "segment.crop_size": the crops as cut, no resizing
NATIVE_SIZE = "native"



# What changes a trained model: every train.* key but the backbone list and the bootstrap of the test
# metrics. The tune and train stages read only these, so adding a backbone re-trains no other one.
TrainRecipe = view(TrainParams, *(k for k in TrainParams.model_fields if k not in {"backbones", "bootstrap"}))


def with_values(recipe: Section, values: dict[str, Any], crop_size: int) -> Section:
    """``recipe`` (train.* or a view of it) with a trial's values, validated; ``input_size: native``
    is the crop size."""
    update = dict(values)
    if update.get("input_size") == NATIVE_SIZE:
        update["input_size"] = crop_size
    return type(recipe).model_validate({**recipe.model_dump(), **update})
