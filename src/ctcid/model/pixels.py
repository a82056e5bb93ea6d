"""Where a set of crops' pixels are, and how a batch of them reaches the model.

Training and scoring never hold their crops. A :class:`CropPixels` names, for each crop, an array
(``crops.npy`` memory-mapped as segmentation stored it, ``uint16`` counts, or crops made in memory
such as counterfactuals) and its row there, with the field levels that standardise it and the side
the model reads. Memory grows with the batch, not with the cohort: 24 bytes of levels and 10 of
index per crop, however large the crops or the model's input (docs/benchmarks.md, "Memory").
A whole memory-mapped file is read with ``pread`` rather than through the mapping: its pages stay
in the kernel's page cache, shared and dropped under pressure, and never count as the process's
resident memory, which a mapping's touched pages would, up to the whole file over an epoch.

A :class:`PixelReader` turns positions into model input on a device: gather, standardise
(``(x - background) / scale``, :func:`ctcid.intensity.standardise` in torch), resize. On CPU each
batch is read from the memory map (rows sorted, so the file is read forwards; the page cache keeps
what is hot). On CUDA the crops of a fit move to the device once, still ``uint16``, when they take
at most a quarter of its free memory; each batch is then gathered, standardised and resized there
and the host only hands over indices. Crops that do not fit are read per batch into pinned memory
and copied asynchronously.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctcid.errors import CtcidError
from ctcid.intensity import Levels
from ctcid.paths import CROPS_NAME

# Share of the device's free memory a fit's crops may take on it; the rest is the model's.
DEVICE_SHARE = 0.25
# Crops copied to the device per step when they move there once (bounds the pinned host buffer).
_UPLOAD_CHUNK = 8192


@dataclass(frozen=True, eq=False)
class CropPixels:
    """Crop ``i`` is row ``row[i]`` of ``arrays[part[i]]``, standardised by ``levels`` row ``i``.

    ``levels`` None: the values are what the model reads (raw counts, or crops already
    standardised). ``size``: the side the model reads; a crop of another side is resized per batch.
    """

    arrays: tuple[np.ndarray, ...]
    part: np.ndarray  # int16 (n,)
    row: np.ndarray  # int64 (n,)
    size: int
    levels: Levels | None = None

    @classmethod
    def stored(
        cls, crops: np.ndarray, rows: Sequence[int] | np.ndarray, size: int, levels: Levels | None = None
    ) -> CropPixels:
        """Rows ``rows`` of ``crops`` (a memory map); ``levels`` has one row per row of ``crops``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(crops)):
            raise CtcidError(
                f"crop index {int(rows.max())} outside {CROPS_NAME} ({len(crops)} rows): the split or "
                "manifest is out of date; re-run 'ctcid segment' and 'ctcid split' (dvc repro)"
            )
        if levels is not None and len(levels) != len(crops):
            raise CtcidError(f"{len(levels)} rows of intensity levels for {len(crops)} crops")
        return cls(
            (crops,), np.zeros(len(rows), np.int16), rows, int(size),
            None if levels is None else levels.rows(rows),
        )

    @classmethod
    def held(
        cls, images: np.ndarray | Tensor, size: int | None = None, levels: Levels | None = None
    ) -> CropPixels:
        """Crops in memory (``N x C x S x S``), each its own row; ``size`` None keeps their side."""
        array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        if array.ndim != 4 or array.shape[2] != array.shape[3]:
            raise CtcidError(f"crops must be N x C x S x S, got shape {tuple(array.shape)}")
        n = len(array)
        side = array.shape[-1] if size is None else size
        return cls((array,), np.zeros(n, np.int16), np.arange(n, dtype=np.int64), int(side), levels)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of the stored crops."""
        return tuple(self.arrays[0].shape[1:])  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """What a read returns: the arrays' common type, float32 where they differ."""
        kinds = {np.dtype(a.dtype) for a in self.arrays}
        return kinds.pop() if len(kinds) == 1 else np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.shape)) * self.dtype.itemsize

    def resized(self, size: int) -> CropPixels:
        return CropPixels(self.arrays, self.part, self.row, int(size), self.levels)

    def take(self, positions: np.ndarray) -> CropPixels:
        positions = np.asarray(positions, dtype=np.int64)
        levels = None if self.levels is None else self.levels.rows(positions)
        return CropPixels(self.arrays, self.part[positions], self.row[positions], self.size, levels)

    def join(self, more: CropPixels) -> CropPixels:
        """These crops followed by ``more`` (same stored shape and side; both standardised or neither)."""
        if more.shape != self.shape or more.size != self.size:
            raise ValueError(
                f"cannot join crops {more.shape} read at {more.size} to {self.shape} at {self.size}"
            )
        if (self.levels is None) != (more.levels is None):
            raise ValueError("cannot join standardised crops to crops without levels")
        levels = None
        if self.levels is not None and more.levels is not None:
            levels = Levels.concat([self.levels, more.levels], self.shape[0])
        part = np.concatenate([self.part, more.part + len(self.arrays)]).astype(np.int16)
        rows = np.concatenate([self.row, more.row])
        return CropPixels(self.arrays + more.arrays, part, rows, self.size, levels)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The stored pixels of ``positions``, in that order; each array read in row order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), *self.shape), dtype=self.dtype)
        parts, rows = self.part[positions], self.row[positions]
        for number, array in enumerate(self.arrays):
            chosen = np.flatnonzero(parts == number) if len(self.arrays) > 1 else np.arange(len(positions))
            if chosen.size:
                order = np.argsort(rows[chosen], kind="stable")
                out[chosen[order]] = _read_rows(array, rows[chosen][order])
        return out


def _read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` (rows sorted); a whole memory-mapped ``.npy`` is read with ``pread``."""
    path = getattr(array, "filename", None)
    offset = getattr(array, "offset", None)
    whole = (
        isinstance(array, np.memmap) and path is not None and offset is not None
        and array.flags.c_contiguous and os.path.getsize(path) == offset + array.nbytes
    )
    if not whole or not len(rows):  # a view of a map, or crops in memory
        return array[rows]
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    row_bytes = out[0].nbytes
    target = memoryview(out).cast("B")
    # consecutive rows are one read: a chunk of a sorted full pass reads the file in a few calls
    starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
    ends = np.append(starts[1:], len(rows))
    with open(path, "rb", buffering=0) as file:
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            wanted = target[start * row_bytes : end * row_bytes]
            if os.preadv(file.fileno(), [wanted], offset + int(rows[start]) * row_bytes) != len(wanted):
                raise CtcidError(f"{path}: shorter than its header says; re-run 'ctcid segment'")
    return out


def resize(images: Tensor, size: int) -> Tensor:
    """``N x C x size x size``; anti-aliased so small FISH spots survive shrinking."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _free_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def _as_tensor(pixels: np.ndarray) -> Tensor:
    """A read as a tensor: uint16 as its int16 bits (every device indexes int16; few do uint16)."""
    if pixels.dtype == np.uint16:
        return torch.from_numpy(pixels.view(np.int16))
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _as_float(raw: Tensor, unsigned16: bool) -> Tensor:
    if unsigned16:  # int16 bits of uint16 counts
        return (raw.to(torch.int32) & 0xFFFF).to(torch.float32)
    return raw.to(torch.float32)


class PixelReader:
    """Model input (float32, standardised, resized) of positions of ``pixels``, on ``device``.

    ``hold`` moves the crops to the device once (None: on CUDA when they fit :data:`DEVICE_SHARE`
    of its free memory; True on CPU runs the same code in host memory, for tests). :attr:`held`
    says whether they did; then batches take positions on the device, else on the host.
    """

    def __init__(
        self, pixels: CropPixels, device: torch.device | str = "cpu", hold: bool | None = None
    ) -> None:
        self.pixels = pixels
        self.device = torch.device(device)
        self._unsigned16 = pixels.dtype == np.uint16
        if hold is None:
            hold = self.device.type == "cuda" and pixels.nbytes <= DEVICE_SHARE * _free_bytes(self.device)
        self._held = self._upload() if hold and len(pixels) else None
        self._background: Tensor | None = None
        self._scale: Tensor | None = None
        if pixels.levels is not None:
            levels = pixels.levels
            self._background = torch.from_numpy(np.asarray(levels.background, np.float32)).to(self.device)
            self._scale = torch.from_numpy(np.asarray(levels.scale, np.float32)).to(self.device)

    @property
    def held(self) -> bool:
        return self._held is not None

    def _upload(self) -> Tensor:
        """Every crop on the device, in position order: read and copied a chunk at a time."""
        pixels = self.pixels
        first = _as_tensor(pixels.read(np.arange(0)))
        out = torch.empty((len(pixels), *pixels.shape), dtype=first.dtype, device=self.device)
        for start in range(0, len(pixels), _UPLOAD_CHUNK):
            positions = np.arange(start, min(start + _UPLOAD_CHUNK, len(pixels)))
            chunk = _as_tensor(pixels.read(positions))
            if self.device.type == "cuda":  # pinned: the copy runs while the next chunk is read
                chunk = chunk.pin_memory()
            out[start : start + len(positions)].copy_(chunk, non_blocking=True)
        return out

    def __call__(self, positions: Tensor) -> Tensor:
        """``positions``: int64 on the device when :attr:`held`, on the host otherwise."""
        if self._held is not None:
            raw = self._held.index_select(0, positions)
        else:
            raw = _as_tensor(self.pixels.read(positions.cpu().numpy()))
            if self.device.type == "cuda":
                raw = raw.pin_memory().to(self.device, non_blocking=True)
        x = _as_float(raw, self._unsigned16)
        if self._background is not None and self._scale is not None:
            where = positions.to(self._background.device, non_blocking=True)
            background = self._background.index_select(0, where)[:, :, None, None]
            x = (x - background) / self._scale.index_select(0, where)[:, :, None, None]
        return resize(x, self.pixels.size)
