"""Per-field intensity standardisation: one estimate and one transform, used by every step.

A crop's counts depend on the site as much as on the cell: the camera offset and the slide's
autofluorescence add to every pixel, while exposure, lamp, probe and stain multiply the signal.
A network trained on one site's counts learns those levels (a "bright enough" CD45 ring, a "dim
enough" nucleus) and collapses at a site whose levels differ. So the model never sees counts:

* :func:`estimate_levels` measures one field's **background** (median of the crops' border
  pixels, where no nucleus lies) and **scale** (the upper quartile, over the field's cells, of
  each crop's brightest 1 % above background: the nucleus, a CEP8 spot, the CD45 ring) per channel;
* :func:`standardise` maps counts to ``(counts - background) / scale``, so a typical cell's signal
  is about 1 in every channel whatever the exposure, and background is 0.

The estimate reads only the crops of the field's cells, never the whole image, so the segment
stage (manifest columns, :data:`ctcid.contracts.BACKGROUND_COLUMNS`), ``ctcid predict``, the
service's ``/count_sample`` (one field at a time) and its ``/classify`` (the crops of one request
taken as one field) all compute it the same way. The upper quartile over cells keeps the CD45
scale on leukocytes even when half a field's cells are CD45-negative CTCs; a floor of
:data:`NOISE_FLOOR` background-noise units keeps a field without any CD45+ cell from blowing its
CD45 noise up to "positive".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctcid.contracts import BACKGROUND_COLUMNS, SCALE_COLUMNS, STAINS
from ctcid.errors import CtcidError

BORDER = 3  # px: the ring of each crop read as background (crops are centred on a nucleus)
SIGNAL_PERCENTILE = 99.0  # per crop and channel: its brightest 1 % of pixels
CELL_QUANTILE = 0.75  # over a field's cells: robust to fields where half the cells lack a marker
NOISE_FLOOR = 10.0  # a scale is never below this many background-noise sigmas
MIN_SCALE = 1.0  # counts: and never below one count (a constant, noiseless test image)


@dataclass(frozen=True)
class Levels:
    """Background and scale per crop and channel (``N x C`` float32, channels as the crops')."""

    background: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        if self.background.shape != self.scale.shape or self.background.ndim != 2:
            raise ValueError(
                f"levels must be two N x C arrays, got {self.background.shape} and {self.scale.shape}"
            )

    def __len__(self) -> int:
        return len(self.background)

    def rows(self, index: np.ndarray | Sequence[int]) -> Levels:
        index = np.asarray(index, dtype=np.int64)
        return Levels(self.background[index], self.scale[index])

    @classmethod
    def repeat(cls, background: np.ndarray, scale: np.ndarray, n: int) -> Levels:
        """One field's levels (``C`` each) for its ``n`` crops."""
        return cls(
            np.repeat(np.asarray(background, np.float32)[None, :], n, axis=0),
            np.repeat(np.asarray(scale, np.float32)[None, :], n, axis=0),
        )

    @classmethod
    def concat(cls, parts: Sequence[Levels], channels: int) -> Levels:
        if not parts:
            return cls(np.zeros((0, channels), np.float32), np.ones((0, channels), np.float32))
        return cls(
            np.concatenate([p.background for p in parts]).astype(np.float32),
            np.concatenate([p.scale for p in parts]).astype(np.float32),
        )


def _border(crops: np.ndarray) -> np.ndarray:
    """``C x P`` border pixels of all crops (every crop's outer :data:`BORDER` px ring)."""
    size = crops.shape[-1]
    width = min(BORDER, max(1, size // 4))
    mask = np.ones((size, size), dtype=bool)
    mask[width : size - width, width : size - width] = False
    return np.moveaxis(crops[..., mask], 1, 0).reshape(crops.shape[1], -1)


def estimate_levels(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One field's background and scale per channel (``C`` float32 each) from its ``N x C x S x S`` crops."""
    crops = np.asarray(crops)
    if crops.ndim != 4:
        raise CtcidError(f"intensity levels need N x C x S x S crops, got shape {crops.shape}")
    channels = crops.shape[1]
    if len(crops) == 0:
        return np.zeros(channels, np.float32), np.ones(channels, np.float32)
    values = crops.astype(np.float32, copy=False)
    border = _border(values)
    background = np.median(border, axis=1)
    noise = 1.4826 * np.median(np.abs(border - background[:, None]), axis=1)
    brightest = np.percentile(values.reshape(len(values), channels, -1), SIGNAL_PERCENTILE, axis=2)
    signal = np.quantile(brightest - background[None, :], CELL_QUANTILE, axis=0)
    scale = np.maximum(np.maximum(signal, NOISE_FLOOR * noise), MIN_SCALE)
    return background.astype(np.float32), scale.astype(np.float32)


def field_levels(crops: np.ndarray) -> Levels:
    """:func:`estimate_levels` of one field, repeated for each of its crops."""
    background, scale = estimate_levels(crops)
    return Levels.repeat(background, scale, len(crops))


def standardise(crops: np.ndarray, levels: Levels) -> np.ndarray:
    """``(crops - background) / scale`` per crop and channel, float32; the model's input scale."""
    crops = np.asarray(crops)
    if len(levels) != len(crops) or levels.background.shape[1] != crops.shape[1]:
        raise CtcidError(
            f"intensity levels for {len(levels)} crops x {levels.background.shape[1]} channels do not "
            f"fit crops of shape {tuple(crops.shape)}"
        )
    background = levels.background[:, :, None, None]
    scale = levels.scale[:, :, None, None]
    return ((crops.astype(np.float32) - background) / scale).astype(np.float32, copy=False)


def model_input(crops: np.ndarray, levels: Levels | None, standardised: bool) -> np.ndarray:
    """Crops as a model reads them (float32): standardised for a model trained so, else counts.

    Without ``levels`` the crops are taken as one field and their levels estimated from them
    together (the service's ``/classify``), as the segment step does for one field's cells.
    """
    if not standardised:
        return np.asarray(crops, dtype=np.float32)
    return standardise(crops, levels if levels is not None else field_levels(crops))


def _stain_order(channels: Sequence[str]) -> list[int]:
    """Position of each of ``channels`` in :data:`STAINS` (the manifest's column order)."""
    try:
        return [STAINS.index(name) for name in channels]
    except ValueError:
        raise CtcidError(
            f"channels must be {', '.join(STAINS)} in some order, got {list(channels)}"
        ) from None


def level_columns(levels: Levels, channels: Sequence[str]) -> dict[str, np.ndarray]:
    """The manifest's level columns of ``levels`` (crops in ``channels`` order)."""
    order = _stain_order(channels)
    columns = {}
    for position, stain in enumerate(order):
        columns[BACKGROUND_COLUMNS[stain]] = levels.background[:, position].astype(np.float32)
        columns[SCALE_COLUMNS[stain]] = levels.scale[:, position].astype(np.float32)
    return columns


def manifest_levels(manifest: pd.DataFrame, channels: Sequence[str]) -> Levels:
    """Every manifest row's levels, channels in ``channels`` order (the crops'), aligned with crop_index."""
    missing = [c for c in BACKGROUND_COLUMNS + SCALE_COLUMNS if c not in manifest.columns]
    if missing:
        raise CtcidError(
            f"the manifest has no intensity levels ({', '.join(missing)}): it was cut by an older "
            "ctcid; re-run 'ctcid segment' (dvc repro)"
        )
    order = _stain_order(channels)
    background = manifest[[BACKGROUND_COLUMNS[i] for i in order]].to_numpy(dtype=np.float32)
    scale = manifest[[SCALE_COLUMNS[i] for i in order]].to_numpy(dtype=np.float32)
    if not (np.isfinite(background).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise CtcidError("the manifest's intensity levels hold missing, infinite or non-positive values")
    return Levels(background, scale)
