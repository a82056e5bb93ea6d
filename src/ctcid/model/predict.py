"""Saved models: write and read ``model.pt``, and score crops with it (evaluation and serving).

``model.pt`` is a plain dict (``torch.load(weights_only=True)`` reads it without unpickling
code): ``format``, ``state_dict`` of a :class:`CellClassifier` and ``metadata`` (backbone, init,
input size, channel order, normalisation statistics, operating threshold, CV summary, and whether
it reads field-standardised crops). Inputs are crops as ``crops.npy`` holds them (``N x C x S x S``
counts, channels in the metadata's order) with their fields' intensity levels, or crops already
standardised by :func:`ctcid.intensity.standardise`; they are read, standardised and resized a batch
at a time on the model's device, by the path training takes (:class:`~ctcid.model.dataset.CropBatches`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctcid.errors import CtcidError
from ctcid.intensity import Levels
from ctcid.model.backbones import CellClassifier, build_classifier
from ctcid.model.dataset import LabelledCrops, Normalisation
from ctcid.model.pixels import CropPixels
from ctcid.model.trainer import score

MODEL_FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    backbone: str
    init: str
    input_size: int
    channels: tuple[str, ...]
    normalisation: Normalisation
    threshold: float  # operating point chosen on out-of-fold predictions
    target_sensitivity: float
    epochs: int
    seed: int
    cv: dict[str, float] = field(default_factory=dict)  # mean CV metrics (threshold 0.5)
    # True: trained on field-standardised crops (train.standardise); models saved before it read counts
    standardise: bool = False
    # CTCs per patient are counted at or above it: chosen on out-of-fold predictions for the fewest
    # count errors per training patient (None: models saved before it; the split's prior-corrected one)
    count_threshold: float | None = None
    stem: str = "standard"  # train.stem: the network's first layers
    # train.spot_features: the CEP8 spot-count fusion head's settings (backbones.spot_config); None: none
    spots: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["channels"] = list(self.channels)
        values["normalisation"] = {"mean": list(self.normalisation.mean), "std": list(self.normalisation.std)}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInfo:
        values = dict(values)
        values["channels"] = tuple(values["channels"])
        norm = values["normalisation"]
        values["normalisation"] = Normalisation(tuple(norm["mean"]), tuple(norm["std"]))
        return cls(**values)


@dataclass(frozen=True)
class LoadedModel:
    model: CellClassifier
    info: ModelInfo

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def save_model(path: str | Path, model: CellClassifier, info: ModelInfo) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save({"format": MODEL_FORMAT, "state_dict": state, "metadata": info.to_dict()}, path)
    return path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the classifier from ``model.pt`` (no pretrained weights file needed) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CtcidError(f"{path}: no such model; run 'ctcid train --backbone <name>' first")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        info = ModelInfo.from_dict(saved["metadata"])
    except Exception as error:  # truncated file, foreign pickle, missing keys
        raise CtcidError(f"{path}: not a ctcid model file ({error})") from None
    if saved.get("format") != MODEL_FORMAT:
        raise CtcidError(f"{path}: model format {saved.get('format')!r}, this ctcid reads {MODEL_FORMAT}")
    model = build_classifier(
        info.backbone, info.normalisation, "scratch", info.input_size, stem=info.stem,  # type: ignore[arg-type]
        spots=info.spots,
    )
    model.load_state_dict(saved["state_dict"], strict=True)
    model.to(device).eval()
    return LoadedModel(model, info)


def score_crops(
    loaded: LoadedModel,
    crops: np.ndarray,
    rows: np.ndarray | None = None,
    batch_size: int = 256,
    levels: Levels | None = None,
) -> np.ndarray:
    """CTC probability of crops ``rows`` (all when None) of an ``N x C x S x S`` array, in [0, 1].

    ``levels`` (one row per row of ``crops``) are the crops' field intensity levels: a standardising
    model standardises with them. Without them the crops must already be on the model's input
    scale (standardised for such a model, as the service sends them). A model that reads counts
    ignores them.
    """
    if crops.ndim != 4 or crops.shape[1] != len(loaded.info.channels):
        raise CtcidError(
            f"crops of shape {tuple(crops.shape)} do not fit the model: expected N x "
            f"{len(loaded.info.channels)} x S x S with channels {', '.join(loaded.info.channels)}"
        )
    rows = np.arange(len(crops)) if rows is None else np.asarray(rows, dtype=np.int64)
    levels = levels if loaded.info.standardise else None
    if levels is not None and len(levels) != len(crops):
        raise CtcidError(f"{len(levels)} rows of intensity levels for {len(crops)} crops")
    if not len(rows):
        return np.empty(0, dtype=np.float32)
    pixels = CropPixels.stored(crops, rows, loaded.info.input_size, levels)
    unlabelled = LabelledCrops(pixels, torch.zeros(len(rows), dtype=torch.int64), rows)
    return score(loaded.model, unlabelled, batch_size, loaded.device)
