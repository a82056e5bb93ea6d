"""Labelled single-cell crops, per-channel normalisation, and batches for training and scoring.

A :class:`LabelledCrops` holds labels and where each crop's pixels are
(:class:`~ctcid.model.pixels.CropPixels`), never the pixels: every batch is read from the
memory-mapped ``crops.npy``, standardised by its fields' intensity levels (:mod:`ctcid.intensity`,
``train.standardise``), resized to the side the model reads and augmented as it is drawn, on the
fit's device (:class:`CropBatches`). Memory so grows with the batch, not the cohort
(docs/benchmarks.md, "Memory"). Normalisation is a layer of the model (:class:`ChannelNormalise`)
whose statistics come from the training crops only (:func:`fit_normalisation`), so a saved model
carries its own preprocessing and augmentation acts on field-standardised intensities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ctcid.config.train import SiteShift
from ctcid.contracts import cell_labels, open_crops
from ctcid.errors import CtcidError
from ctcid.intensity import Levels, manifest_levels
from ctcid.model.pixels import CropPixels, PixelReader, resize
from ctcid.model.shift import DEFAULT_CHANNELS, draw, site_shift

# Crops whose statistics give a model's channel normalisation: all of them up to this many, else this
# many spread evenly over the training set (the mean and SD are then exact to ~1 %, and the pass costs
# the same on any cohort).
NORMALISATION_CROPS = 20_000


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


def resize_crops(crops: np.ndarray | Tensor, input_size: int) -> Tensor:
    """float32 ``N x C x input_size x input_size`` of crops in memory (anti-aliased, as batches are)."""
    images = crops if isinstance(crops, Tensor) else torch.from_numpy(np.asarray(crops, dtype=np.float32))
    return resize(images.to(torch.float32), input_size)


def input_levels(manifest: pd.DataFrame, channels: Sequence[str], standardised: bool) -> Levels | None:
    """Every manifest row's field levels when the model standardises (``train.standardise``), else None."""
    return manifest_levels(manifest, channels) if standardised else None


def read_crops(
    crops: np.ndarray, crop_index: np.ndarray, input_size: int, levels: Levels | None = None
) -> Tensor:
    """Rows ``crop_index`` of a (memory-mapped) crops array as model input, all in memory, in order.

    ``levels`` (one row per row of ``crops``) standardises each crop; None keeps the values. For
    tests and benches on a few crops: training and scoring read a batch at a time (:class:`CropBatches`).
    """
    pixels = CropPixels.stored(crops, crop_index, input_size, levels)
    return PixelReader(pixels)(torch.arange(len(pixels)))


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
    """Where the crops' pixels are, their 0/1 labels, the crops.npy row of each, and their facts.

    ``pixels`` may be given as an ``N x C x S x S`` tensor of crops already in memory (tests,
    benches, the service's uploads). ``facts`` is None where nobody asked for it (scoring); training
    with auxiliary heads or hard negatives needs it. Counterfactual crops carry the row of the crop
    they were made from.
    """

    pixels: CropPixels
    labels: Tensor
    crop_index: np.ndarray
    facts: CellFacts | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pixels, Tensor):
            object.__setattr__(self, "pixels", CropPixels.held(self.pixels.to(torch.float32)))
        if len(self.pixels) != len(self.labels):
            raise ValueError(f"{len(self.pixels)} crops for {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """The side the model reads."""
        return self.pixels.size

    @property
    def images(self) -> Tensor:
        """Every crop as model input, in memory (CPU): for tests and small sets only; training and
        scoring read a batch at a time."""
        return PixelReader(self.pixels)(torch.arange(len(self)))

    def resized(self, size: int) -> LabelledCrops:
        """The same crops, read at side ``size``."""
        return LabelledCrops(self.pixels.resized(size), self.labels, self.crop_index, self.facts)

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
        positions = rows.numpy()
        pixels = self.pixels.take(positions)
        return LabelledCrops(pixels, self.labels[rows], self.crop_index[positions], facts)

    def extended(self, more: LabelledCrops) -> LabelledCrops:
        """These crops followed by ``more`` (both with facts, or both without)."""
        if (self.facts is None) != (more.facts is None):
            raise ValueError("cannot join crops with facts to crops without")
        facts = None if self.facts is None else CellFacts.join([self.facts, more.facts])  # type: ignore[list-item]
        return LabelledCrops(
            self.pixels.join(more.pixels),
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
    """Labels of the manifest rows ``crop_index`` (from ``label_source``) and where their crops are.

    ``levels`` (:func:`input_levels`) standardises the crops; None keeps raw counts.
    ``cd45_threshold`` (``segment.cd45_threshold``) attaches each crop's :class:`CellFacts`.
    No pixel is read here: the crops stay in the memory-mapped file until a batch needs them.
    """
    crop_index = np.asarray(crop_index, dtype=np.int64)
    if crop_index.size and crop_index.max() >= len(manifest):
        raise CtcidError("the split names rows beyond the manifest; re-run 'ctcid split' (dvc repro)")
    labels = cell_labels(manifest, label_source).iloc[crop_index]
    if labels.isna().any():
        raise CtcidError("the split names unlabelled manifest rows; re-run 'ctcid split' (dvc repro)")
    pixels = CropPixels.stored(open_crops(crops_path), crop_index, input_size, levels)
    classes = labels.to_numpy(dtype=np.int64)
    facts = None if cd45_threshold is None else cell_facts(manifest, crop_index, classes, cd45_threshold)
    return LabelledCrops(pixels, torch.as_tensor(classes), crop_index, facts)


def fit_normalisation(
    data: LabelledCrops, device: torch.device | None = None, batch_size: int = 256
) -> Normalisation:
    """:class:`Normalisation` of ``data`` as the model reads it, a batch at a time.

    At most :data:`NORMALISATION_CROPS` crops, spread evenly over ``data`` (no random draw: the
    same crops give the same statistics on every machine). Per-batch means and sums of squares are
    pooled in float64 (Chan et al.), so the result is the two-pass figure of all the crops used.
    """
    if len(data) > NORMALISATION_CROPS:
        spread = np.linspace(0, len(data) - 1, NORMALISATION_CROPS).astype(np.int64)
        data = data.take(torch.from_numpy(spread))
    device = device or torch.device("cpu")
    count, mean, squares = 0, None, None
    for images, _ in CropBatches(data, batch_size, device=device):
        flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
        n = flat.shape[1]
        batch_mean = flat.mean(dim=1)
        batch_squares = ((flat - batch_mean[:, None]) ** 2).sum(dim=1)
        if mean is None or squares is None:
            count, mean, squares = n, batch_mean, batch_squares
            continue
        delta = batch_mean - mean
        total = count + n
        squares = squares + batch_squares + delta**2 * count * n / total
        mean = mean + delta * n / total
        count = total
    if mean is None or squares is None:
        raise CtcidError("no training crops to normalise by")
    std = (squares / max(count - 1, 1)).sqrt().clamp_min(1e-6)
    return Normalisation(tuple(mean.cpu().tolist()), tuple(std.cpu().tolist()))


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
    imitates another site's optics and camera (``channels``: the stain of each channel). Whole-batch
    selects, no boolean indexing: nothing waits for the device (``generator`` may live on it).
    """
    n = images.shape[0]
    quarter_turns = torch.randint(0, 4, (n,), generator=generator, device=generator.device).to(images.device)
    mirrored = draw(generator, (n,), images) < 0.5
    out = images
    for turns in range(1, 4):
        chosen = (quarter_turns == turns).view(-1, 1, 1, 1)
        out = torch.where(chosen, torch.rot90(images, turns, dims=(2, 3)), out)
    out = torch.where(mirrored.view(-1, 1, 1, 1), out.flip(3), out)
    gain = 1.0 + intensity_jitter * (2.0 * draw(generator, (n, images.shape[1], 1, 1), images) - 1.0)
    out = out * gain
    return out if shift is None else site_shift(out, generator, shift, channels)


class CropBatches:
    """Mini-batches of model input on ``device``, read per batch (:class:`~ctcid.model.pixels.PixelReader`).

    ``training=True`` shuffles and augments with ``generator`` (so runs are reproducible) and drops
    a trailing batch of one crop, which BatchNorm cannot normalise on a 1x1 feature map.
    ``augment_generator`` draws the augmentation (default: ``generator``; on CUDA a generator on
    the device, so augmentation never waits for the host).
    ``rebalance=True`` makes every epoch a fresh balanced draw: all of the minority class and as
    many majority-class crops drawn anew, so over the epochs the network sees many more distinct
    negatives than one down-sampling keeps, at the cost of a balanced epoch. ``hard=True`` (needs
    ``data.facts``) makes every epoch all CTCs, every hard negative and a fresh draw of as many
    other negatives as there are CTCs: the look-alikes a balanced draw keeps a few of are all seen.
    ``site_shift`` (with ``channels``, the stain of each channel) shifts augmented training batches
    after flips and gain. Labels (and facts) move to the device once; batches yield them there.
    ``hold``: :class:`PixelReader`'s.
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
        device: torch.device | str | None = None,
        augment_generator: torch.Generator | None = None,
        hold: bool | None = None,
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
        self.augment_generator = augment_generator or generator
        self.intensity_jitter = intensity_jitter
        self.augmented = augmented
        self.rebalance = rebalance
        self.site_shift = site_shift
        self.channels = tuple(channels)
        self.hard = hard
        self.device = torch.device(device or "cpu")
        self.reader = PixelReader(data.pixels, self.device, hold)
        self.labels = data.labels.to(self.device)
        self.facts = None if data.facts is None else data.facts.to(self.device)
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
        """As iterating, with each batch's positions in ``data`` first (on the device; to look up facts)."""
        order = self._order()
        # one copy of the epoch's order to the device; batches slice it there
        on_device = order.to(self.device, non_blocking=True) if self.device.type != "cpu" else order
        n = len(order)
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size]
            if self.training and len(rows) == 1 and n > 1:
                continue
            placed = on_device[start : start + self.batch_size]
            images = self.reader(placed if self.reader.held else rows)
            if self.training and self.augmented:
                images = augment(
                    images, self.augment_generator, self.intensity_jitter, self.site_shift, self.channels
                )
            yield placed, images, self.labels.index_select(0, placed)
