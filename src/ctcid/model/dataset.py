"""Single-cell crops in memory, per-channel normalisation, and tensor augmentation for training.

Crops are read once from the memory-mapped ``crops.npy`` (only the requested rows), standardised
by their field's intensity levels (:mod:`ctcid.intensity`, ``train.standardise``), resized once
to ``train.input_size`` and kept as float32 tensors: a few thousand 32 px crops take a few MB, so
no epoch ever decodes or resizes again. Normalisation is a layer of the model
(:class:`ChannelNormalise`) whose statistics come from the training crops only, so a saved model
carries its own preprocessing and augmentation acts on field-standardised intensities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctcid.config.train import SiteShift
from ctcid.contracts import cell_labels, open_crops
from ctcid.errors import CtcidError
from ctcid.intensity import Levels, manifest_levels, standardise
from ctcid.model.shift import DEFAULT_CHANNELS, site_shift
from ctcid.paths import CROPS_NAME

# Rows read from the memory map per step: bounds the uint16 -> float32 copy to ~20 MB at 40 px.
_READ_CHUNK = 1024


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and standard deviation, in ``params.channels`` order."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, images: Tensor) -> Normalisation:
        """Statistics of ``N x C x H x W`` training images; a flat channel gets std 1, not 0."""
        flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
        std = flat.std(dim=1).clamp_min(1e-6)
        return cls(tuple(flat.mean(dim=1).tolist()), tuple(std.tolist()))

    def module(self) -> ChannelNormalise:
        return ChannelNormalise(self.mean, self.std)


class ChannelNormalise(nn.Module):
    """``(x - mean) / std`` per channel; buffers, so they travel in the state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def resize_crops(crops: np.ndarray, input_size: int) -> Tensor:
    """float32 ``N x C x input_size x input_size``; anti-aliased so small FISH spots survive shrinking."""
    images = torch.from_numpy(np.asarray(crops, dtype=np.float32))
    if images.shape[-1] == input_size:
        return images
    return F.interpolate(
        images, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True
    )


def input_levels(manifest: pd.DataFrame, channels: Sequence[str], standardised: bool) -> Levels | None:
    """Every manifest row's field levels when the model standardises (``train.standardise``), else None."""
    return manifest_levels(manifest, channels) if standardised else None


def read_crops(
    crops: np.ndarray, crop_index: np.ndarray, input_size: int, levels: Levels | None = None
) -> Tensor:
    """Rows ``crop_index`` of a (memory-mapped) crops array, resized, in the order asked for.

    ``levels`` (one row per row of ``crops``) standardises each crop before resizing; None keeps the
    values as they are (raw counts, or crops already standardised).
    """
    crop_index = np.asarray(crop_index, dtype=np.int64)
    if crop_index.size and (crop_index.min() < 0 or crop_index.max() >= len(crops)):
        raise CtcidError(
            f"crop index {int(crop_index.max())} outside {CROPS_NAME} ({len(crops)} rows): the split or "
            "manifest is out of date; re-run 'ctcid segment' and 'ctcid split' (dvc repro)"
        )
    out = torch.empty((len(crop_index), crops.shape[1], input_size, input_size), dtype=torch.float32)
    # Sorted reads touch the memory map sequentially; results go back to the requested order.
    order = np.argsort(crop_index, kind="stable")
    for start in range(0, len(order), _READ_CHUNK):
        rows = order[start : start + _READ_CHUNK]
        chunk = crops[crop_index[rows]]
        if levels is not None:
            chunk = standardise(chunk, levels.rows(crop_index[rows]))
        out[torch.from_numpy(rows)] = resize_crops(chunk, input_size)
    return out


# Copy numbers above this are clipped for the auxiliary head: 3 vs 2 is the criterion, 9 vs 8 is not.
MAX_COPIES = 8.0


@dataclass(frozen=True)
class CellFacts:
    """What the criterion reads, per crop: the auxiliary heads' targets and the hard-negative flag.

    ``copies`` (CEP8 copy number) and ``cd45_positive`` (0/1) come from the annotations where a
    lab has them and from the segment step's spot count and CD45 call where it has not. ``hard``
    marks negatives that look like a CTC in all but one marker (CD45-negative by the segment step's
    call, or a CTC given a CD45 ring): ``train.negatives: hard`` keeps them in every epoch.
    """

    copies: Tensor  # float32
    cd45_positive: Tensor  # float32 0/1
    hard: Tensor  # bool

    def take(self, rows: Tensor) -> CellFacts:
        return CellFacts(self.copies[rows], self.cd45_positive[rows], self.hard[rows])

    def to(self, device: torch.device) -> CellFacts:
        return CellFacts(self.copies.to(device), self.cd45_positive.to(device), self.hard.to(device))

    @staticmethod
    def join(parts: Sequence[CellFacts]) -> CellFacts:
        fields = ("copies", "cd45_positive", "hard")
        return CellFacts(*(torch.cat([getattr(p, name) for p in parts]) for name in fields))


def cell_facts(
    manifest: pd.DataFrame, rows: np.ndarray, labels: np.ndarray, cd45_threshold: float
) -> CellFacts:
    """:class:`CellFacts` of manifest ``rows`` (``labels`` their 0/1 classes); annotation first."""
    cells = manifest.iloc[rows]
    called_positive = cells["cd45_score"].to_numpy(dtype=np.float64) >= cd45_threshold
    copies = cells["cep8_spots"].to_numpy(dtype=np.float64)
    cd45 = called_positive.astype(np.float64)
    if "true_cep8" in cells:
        annotated = cells["true_cep8"].to_numpy(dtype=np.float64, na_value=np.nan)
        copies = np.where(np.isnan(annotated), copies, annotated)
    if "true_cd45" in cells:
        status = cells["true_cd45"].astype("string")
        known = status.notna().to_numpy()
        cd45 = np.where(known, (status != "negative").fillna(True).to_numpy(dtype=bool), cd45)
    return CellFacts(
        torch.as_tensor(np.minimum(copies, MAX_COPIES), dtype=torch.float32),
        torch.as_tensor(cd45, dtype=torch.float32),
        torch.as_tensor((np.asarray(labels) == 0) & ~called_positive),
    )


@dataclass(frozen=True)
class LabelledCrops:
    """Images (raw intensity scale, resized), 0/1 labels, the crops.npy row of each, and their facts.

    ``facts`` is None where nobody asked for it (scoring); training with auxiliary heads or hard
    negatives needs it. Counterfactual crops carry the row of the crop they were made from.
    """

    images: Tensor
    labels: Tensor
    crop_index: np.ndarray
    facts: CellFacts | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, crop_index: Sequence[int] | np.ndarray) -> LabelledCrops:
        """The crops with these crops.npy rows, in the order given."""
        position = pd.Index(self.crop_index).get_indexer(np.asarray(crop_index, dtype=np.int64))
        if (position < 0).any():
            missing = np.asarray(crop_index)[position < 0][:5].tolist()
            raise CtcidError(f"crop indices {missing} are not among the loaded crops")
        return self.take(torch.from_numpy(position))

    def take(self, rows: Tensor) -> LabelledCrops:
        """The crops at these positions."""
        facts = None if self.facts is None else self.facts.take(rows)
        return LabelledCrops(self.images[rows], self.labels[rows], self.crop_index[rows.numpy()], facts)

    def extended(self, more: LabelledCrops) -> LabelledCrops:
        """These crops followed by ``more`` (both with facts, or both without)."""
        if (self.facts is None) != (more.facts is None):
            raise ValueError("cannot join crops with facts to crops without")
        facts = None if self.facts is None else CellFacts.join([self.facts, more.facts])  # type: ignore[list-item]
        return LabelledCrops(
            torch.cat([self.images, more.images]),
            torch.cat([self.labels, more.labels]),
            np.concatenate([self.crop_index, more.crop_index]),
            facts,
        )


def load_labelled_crops(
    crops_path: str | Path,
    manifest: pd.DataFrame,
    crop_index: Sequence[int] | np.ndarray,
    label_source: str,
    input_size: int,
    levels: Levels | None = None,
    cd45_threshold: float | None = None,
) -> LabelledCrops:
    """Crops and labels of the manifest rows ``crop_index`` (labels from ``label_source``).

    ``levels`` (:func:`input_levels`) standardises the crops; None keeps raw counts.
    ``cd45_threshold`` (``segment.cd45_threshold``) attaches each crop's :class:`CellFacts`.
    """
    crop_index = np.asarray(crop_index, dtype=np.int64)
    if crop_index.size and crop_index.max() >= len(manifest):
        raise CtcidError("the split names rows beyond the manifest; re-run 'ctcid split' (dvc repro)")
    labels = cell_labels(manifest, label_source).iloc[crop_index]
    if labels.isna().any():
        raise CtcidError("the split names unlabelled manifest rows; re-run 'ctcid split' (dvc repro)")
    images = read_crops(open_crops(crops_path), crop_index, input_size, levels)
    classes = labels.to_numpy(dtype=np.int64)
    facts = None if cd45_threshold is None else cell_facts(manifest, crop_index, classes, cd45_threshold)
    return LabelledCrops(images, torch.as_tensor(classes), crop_index, facts)


def augment(
    images: Tensor,
    generator: torch.Generator,
    intensity_jitter: float,
    shift: SiteShift | None = None,
    channels: Sequence[str] = DEFAULT_CHANNELS,
) -> Tensor:
    """Random dihedral transform and per-channel gain of each crop, then ``shift`` (None: no site shift).

    A cell has no preferred orientation, so all eight flips/90-degree rotations keep its class
    exactly and need no interpolation that could blur a FISH spot away; the gain in
    ``[1 - j, 1 + j]`` mimics exposure and staining differences between fields without turning a
    CD45+ cell into a CD45- one at the default 10 %. :func:`~ctcid.model.shift.site_shift` then
    imitates another site's optics and camera (``channels``: the stain of each channel).
    """
    n = images.shape[0]
    quarter_turns = torch.randint(0, 4, (n,), generator=generator)
    mirrored = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for turns in range(4):
        chosen = quarter_turns == turns
        if chosen.any():
            out[chosen] = torch.rot90(images[chosen], turns, dims=(2, 3))
    out = torch.where(mirrored.view(-1, 1, 1, 1), out.flip(3), out)
    gain = 1.0 + intensity_jitter * (2.0 * torch.rand((n, images.shape[1], 1, 1), generator=generator) - 1.0)
    out = out * gain
    return out if shift is None else site_shift(out, generator, shift, channels)


class CropBatches:
    """Mini-batches straight from the in-memory tensors (no per-sample collation).

    ``training=True`` shuffles and augments with ``generator`` (so runs are reproducible) and drops
    a trailing batch of one crop, which BatchNorm cannot normalise on a 1x1 feature map.
    ``rebalance=True`` makes every epoch a fresh balanced draw: all of the minority class and as
    many majority-class crops drawn anew, so over the epochs the network sees many more distinct
    negatives than one down-sampling keeps, at the cost of a balanced epoch. ``hard=True`` (needs
    ``data.facts``) makes every epoch all CTCs, every hard negative and a fresh draw of as many
    other negatives as there are CTCs: the look-alikes a balanced draw keeps a few of are all seen.
    ``site_shift`` (with ``channels``, the stain of each channel) shifts augmented training batches
    after flips and gain.
    """

    def __init__(
        self,
        data: LabelledCrops,
        batch_size: int,
        training: bool = False,
        generator: torch.Generator | None = None,
        intensity_jitter: float = 0.0,
        augmented: bool = True,
        rebalance: bool = False,
        site_shift: SiteShift | None = None,
        channels: Sequence[str] = DEFAULT_CHANNELS,
        hard: bool = False,
    ) -> None:
        if training and generator is None:
            raise ValueError("training batches need a seeded generator")
        if (rebalance or hard) and not training:
            raise ValueError("only training batches are rebalanced")
        if hard and data.facts is None:
            raise ValueError("hard negatives need the crops' facts (load them with a cd45_threshold)")
        self.data = data
        self.batch_size = batch_size
        self.training = training
        self.generator = generator
        self.intensity_jitter = intensity_jitter
        self.augmented = augmented
        self.rebalance = rebalance
        self.site_shift = site_shift
        self.channels = tuple(channels)
        self.hard = hard
        positive = data.labels == 1
        self._classes = (torch.nonzero(positive).flatten(), torch.nonzero(~positive).flatten())
        self._epoch_size = 2 * min(len(c) for c in self._classes) if rebalance else len(data)
        if hard:
            assert data.facts is not None
            always = positive | data.facts.hard
            self._always = torch.nonzero(always).flatten()
            self._others = torch.nonzero(~always).flatten()
            self._epoch_size = len(self._always) + min(int(positive.sum()), len(self._others))

    def __len__(self) -> int:
        full, rest = divmod(self._epoch_size, self.batch_size)
        return full + (1 if rest > (1 if self.training and full else 0) else 0)

    def _order(self) -> Tensor:
        if not self.training:
            return torch.arange(len(self.data))
        if self.hard:
            drawn = self._others[torch.randperm(len(self._others), generator=self.generator)]
            rows = torch.cat([self._always, drawn[: self._epoch_size - len(self._always)]])
            return rows[torch.randperm(len(rows), generator=self.generator)]
        if not self.rebalance:
            return torch.randperm(len(self.data), generator=self.generator)
        minority, majority = sorted(self._classes, key=len)
        drawn = majority[torch.randperm(len(majority), generator=self.generator)[: len(minority)]]
        rows = torch.cat([minority, drawn])
        return rows[torch.randperm(len(rows), generator=self.generator)]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _, images, labels in self.with_rows():
            yield images, labels

    def with_rows(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """As iterating, with each batch's positions in ``data`` first (to look up its facts)."""
        order = self._order()
        n = len(order)
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size]
            if self.training and len(rows) == 1 and n > 1:
                continue
            images = self.data.images[rows]
            if self.training and self.augmented:
                images = augment(
                    images, self.generator, self.intensity_jitter, self.site_shift, self.channels
                )
            yield rows, images, self.data.labels[rows]
