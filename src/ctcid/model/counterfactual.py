"""Label-consistent counterfactual crops: training cells changed in one term of the criterion.

A CTC is DAPI+, CD45-negative and carries three or more CEP8 copies. In the training data the label
also goes with things the criterion does not name (a CTC's nucleus is larger, for one), and a CNN
fitted to the crops alone may learn those and ignore the few-pixel CEP8 spots. A counterfactual is a
real training crop changed in one term of the criterion and labelled by the criterion:

* **spots**: a CD45-negative non-CTC with at most two copies (a CTC look-alike) is given CEP8 spots
  inside its nucleus until it has 3-5 copies: now a CTC;
* **ring**: a CTC is given a CD45 membrane ring around its nucleus: now not a CTC.

Each pairs with its unchanged source among the training crops, so the network can fit both only by
reading the spots and the ring: the counterfactuals teach the criterion itself. Spots and ring are
drawn as the promotion gate's behaviour probes draw them (:mod:`ctcid.model.drawing`), as bright as
this fit's own training cells show them: levels are never measured on test data. The crops stay in
raw camera counts; ``source_rows`` names the ``crops.npy`` row each was made from, so the caller
standardises it with that row's field levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ctcid.intensity import Levels
from ctcid.model.backbones import model_input_size
from ctcid.model.dataset import MAX_COPIES, CellFacts, LabelledCrops, cell_facts
from ctcid.model.drawing import nuclear_radii, ring_image, signal_level, spot_image
from ctcid.model.pixels import CropPixels

CTC_COPIES = 3  # the criterion: at least this many CEP8 copies (and CD45-negative, DAPI+)
NEW_COPIES = (3, 5)  # copies after adding spots, drawn uniformly (inclusive)
UNKNOWN_COPIES = 2  # a source cell without a copy count is taken as diploid
LEVEL_CELLS = 512  # at most this many training cells measure a marker level
DEBRIS = "debris"  # contracts.CELL_TYPES: DAPI-dim, no CTC whatever its spots, never a spot source


@dataclass(frozen=True, eq=False)
class Counterfactuals:
    """``K`` counterfactual crops and what the criterion says of each after the change."""

    crops: np.ndarray  # float32 K x C x S x S, raw camera counts
    source_rows: np.ndarray  # int64 (K,): the crops.npy row each was made from
    labels: np.ndarray  # int64 (K,): 1 = CTC, by the criterion
    copies: np.ndarray  # float32 (K,): CEP8 copies after the change
    cd45_positive: np.ndarray  # float32 (K,): 0/1 after the change

    def __len__(self) -> int:
        return len(self.labels)


def criterion_label(copies: np.ndarray, cd45_positive: np.ndarray) -> np.ndarray:
    """The CTC label of the criterion (int64 0/1): 1 where ``copies >= 3`` and not CD45-positive."""
    copies, positive = np.asarray(copies, dtype=np.float64), np.asarray(cd45_positive, dtype=np.float64)
    return ((copies >= CTC_COPIES) & ~(positive > 0.5)).astype(np.int64)


def make_counterfactuals(
    crops: np.ndarray,
    cells: pd.DataFrame,
    channels: Sequence[str],
    cd45_threshold: float,
    n: int,
    seed: int,
) -> Counterfactuals:
    """About ``n`` counterfactuals of the training ``cells``, half of each kind (see the module doc).

    ``crops`` is the (memory-mapped) crops array that ``cells["crop_index"]`` indexes. ``cells`` are
    the manifest rows of one fit's training cells with a 0/1 ``label``, ``copies`` (CEP8 copies,
    float) and ``cd45_positive`` (0/1, float) added; a missing ``cd45_positive`` falls back on
    ``cd45_score >= cd45_threshold``; unknown copies count as two. Debris (``true_cell_type``) is never
    a spot source: it fails the criterion's DAPI+. Sources are drawn with replacement only where a
    kind has fewer than it needs. A kind without sources, or without cells to measure its level on
    (no cell with a spot, no CD45-positive cell), adds nothing. Deterministic for ``seed``.
    """
    rng = np.random.default_rng(seed)
    cells = cells.reset_index(drop=True)
    copies, positive = _copies(cells), _cd45_positive(cells, cd45_threshold)
    known = np.where(np.isnan(copies), UNKNOWN_COPIES, copies)
    label = cells["label"].to_numpy(dtype=np.int64)
    cep8, cd45 = list(channels).index("CEP8"), list(channels).index("CD45")
    spot_level = _level(crops, cells, cells["cep8_spots"].to_numpy() >= 1, cep8, rng)
    ring_level = _level(crops, cells, positive == 1, cd45, rng)
    look_alikes = (label == 0) & (positive == 0) & (known <= UNKNOWN_COPIES) & ~_is_debris(cells)
    n_ring = n // 2
    spotted = _draw(look_alikes & (spot_level > 0), n - n_ring, rng)
    ringed = _draw((label == 1) & (ring_level > 0), n_ring, rng)
    parts = [
        _with_spots(crops, cells.iloc[spotted], known[spotted], spot_level, cep8, rng),
        _with_ring(crops, cells.iloc[ringed], copies[ringed], ring_level, cd45),
    ]
    return _concatenate(parts)


def _copies(cells: pd.DataFrame) -> np.ndarray:
    return cells["copies"].to_numpy(dtype=np.float64, na_value=np.nan)


def _cd45_positive(cells: pd.DataFrame, cd45_threshold: float) -> np.ndarray:
    called = (cells["cd45_score"].to_numpy(dtype=np.float64) >= cd45_threshold).astype(np.float64)
    if "cd45_positive" not in cells:
        return called
    given = cells["cd45_positive"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(given), called, given)


def _is_debris(cells: pd.DataFrame) -> np.ndarray:
    if "true_cell_type" not in cells:
        return np.zeros(len(cells), dtype=bool)
    return (cells["true_cell_type"].astype(object) == DEBRIS).to_numpy(dtype=bool)


def _draw(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` positions where ``mask`` holds, sorted; repeated only if there are fewer than that."""
    pool = np.flatnonzero(mask)
    if pool.size == 0 or size <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(pool, size=size, replace=pool.size < size))


def _read(crops: np.ndarray, crop_index: np.ndarray) -> np.ndarray:
    """``crops[crop_index]`` as float32, each distinct row read once and in order (a memory map)."""
    rows = np.unique(crop_index)
    block = np.asarray(crops[rows], dtype=np.float32)
    return block[np.searchsorted(rows, crop_index)]


def _level(
    crops: np.ndarray, cells: pd.DataFrame, mask: np.ndarray, channel: int, rng: np.random.Generator
) -> float:
    """A marker's level over at most :data:`LEVEL_CELLS` of the ``mask`` cells (0 if there are none)."""
    pool = np.flatnonzero(mask)
    if pool.size == 0:
        return 0.0
    chosen = np.sort(rng.choice(pool, size=min(LEVEL_CELLS, pool.size), replace=False))
    return signal_level(_read(crops, cells["crop_index"].to_numpy()[chosen]), channel)


def _with_spots(
    crops: np.ndarray,
    sources: pd.DataFrame,
    copies: np.ndarray,
    level: float,
    channel: int,
    rng: np.random.Generator,
) -> Counterfactuals:
    """The sources (with ``copies``, none unknown) given CEP8 spots up to 3-5 copies: CTCs."""
    rows = sources["crop_index"].to_numpy(dtype=np.int64)
    before = np.rint(copies).astype(np.int64)
    after = rng.integers(NEW_COPIES[0], NEW_COPIES[1] + 1, size=len(rows))
    images = _read(crops, rows)
    for crop, radius, count in zip(images, nuclear_radii(sources), after - before, strict=True):
        crop[channel] += level * spot_image(crop.shape[-1], radius, int(count), rng)
    zeros = np.zeros(len(rows), dtype=np.float32)
    return Counterfactuals(images, rows, np.ones(len(rows), np.int64), after.astype(np.float32), zeros)


def _with_ring(
    crops: np.ndarray, sources: pd.DataFrame, copies: np.ndarray, level: float, channel: int
) -> Counterfactuals:
    """The sources with a CD45 membrane ring: CD45-positive, so not CTCs."""
    rows = sources["crop_index"].to_numpy(dtype=np.int64)
    images = _read(crops, rows)
    for crop, radius in zip(images, nuclear_radii(sources), strict=True):
        crop[channel] += level * ring_image(crop.shape[-1], radius)
    ones = np.ones(len(rows), dtype=np.float32)
    return Counterfactuals(images, rows, np.zeros(len(rows), np.int64), copies.astype(np.float32), ones)


def _concatenate(parts: list[Counterfactuals]) -> Counterfactuals:
    return Counterfactuals(
        crops=np.concatenate([p.crops for p in parts]).astype(np.float32, copy=False),
        source_rows=np.concatenate([p.source_rows for p in parts]).astype(np.int64, copy=False),
        labels=np.concatenate([p.labels for p in parts]).astype(np.int64, copy=False),
        copies=np.concatenate([p.copies for p in parts]).astype(np.float32, copy=False),
        cd45_positive=np.concatenate([p.cd45_positive for p in parts]).astype(np.float32, copy=False),
    )


@dataclass(frozen=True, eq=False)
class CounterfactualSource:
    """Appends a fit's counterfactuals to its training crops (``cv.ExtendCrops``).

    Made anew for every fit from that fit's training cells only, so a fold's validation patients
    never lend a crop or a marker level; standardised with the source crop's field levels and
    resized as the real crops are, and flagged as what they are: spot-given cells are CTCs, ringed
    CTCs hard negatives (``train.negatives: hard`` keeps them in every epoch).
    """

    crops: np.ndarray  # crops.npy, raw counts (a memory map)
    manifest: pd.DataFrame
    levels: Levels | None  # every row's field levels when the model standardises, else None
    channels: tuple[str, ...]
    cd45_threshold: float
    input_size: int
    per_ctc: float  # train.counterfactuals

    def __call__(self, train: LabelledCrops, seed: int) -> LabelledCrops:
        facts = train.facts
        labels = train.labels.numpy()
        if facts is None:
            facts = cell_facts(self.manifest, train.crop_index, labels, self.cd45_threshold)
            train = LabelledCrops(train.pixels, train.labels, train.crop_index, facts)
        cells = self.manifest.iloc[train.crop_index].assign(
            label=labels, copies=facts.copies.numpy(), cd45_positive=facts.cd45_positive.numpy()
        )
        n = int(round(self.per_ctc * int(labels.sum())))
        made = make_counterfactuals(self.crops, cells, self.channels, self.cd45_threshold, n, seed)
        if len(made) == 0:
            return train
        made_facts = CellFacts(
            torch.from_numpy(np.minimum(made.copies, MAX_COPIES)),
            torch.from_numpy(made.cd45_positive),
            torch.from_numpy(made.labels == 0),
        )
        levels = None if self.levels is None else self.levels.rows(made.source_rows)
        pixels = CropPixels.held(as_stored(made.crops, self.crops.dtype), self.input_size, levels)
        extra = LabelledCrops(pixels, torch.from_numpy(made.labels), made.source_rows, made_facts)
        return train.extended(extra)


def as_stored(crops: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Made crops in the stored crops' type: integer counts are rounded and clipped as a camera's.

    Then they join the real crops' batches as the same kind of pixels (``uint16`` on a GPU, read
    and standardised there); half a count of rounding is far below any crop's noise.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return crops.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(np.rint(crops), info.min, info.max).astype(dtype)


def counterfactual_source(
    crops: np.ndarray, manifest: pd.DataFrame, levels: Levels | None, params: Any, config: Any
) -> CounterfactualSource | None:
    """``train.counterfactuals`` of a stage's config (seed, channels, segment, train); None when 0."""
    if config.counterfactuals <= 0:
        return None
    return CounterfactualSource(
        crops, manifest, levels if config.standardise else None, tuple(params.channels),
        params.segment.cd45_threshold,
        model_input_size(config.input_size, params.segment.crop_size, config.spot_features),
        config.counterfactuals,
    )
