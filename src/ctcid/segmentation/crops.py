"""Fixed-size crops around nuclei, and the crops array file (``N x C x S x S`` uint16, .npy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def crop_window(image: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """``C x size x size`` window centred on (x, y), zero outside the field, same dtype."""
    channels, height, width = image.shape
    top = int(round(y)) - size // 2
    left = int(round(x)) - size // 2
    out = np.zeros((channels, size, size), dtype=image.dtype)
    y0, y1 = max(top, 0), min(top + size, height)
    x0, x1 = max(left, 0), min(left + size, width)
    if y0 < y1 and x0 < x1:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


def cut_crops(image: np.ndarray, centres: Sequence[tuple[float, float]], size: int) -> np.ndarray:
    """Crops of every (x, y) centre: ``N x C x size x size``."""
    crops = np.zeros((len(centres), image.shape[0], size, size), dtype=image.dtype)
    for i, (x, y) in enumerate(centres):
        crops[i] = crop_window(image, x, y, size)
    return crops


class CropParts(Sequence[np.ndarray]):
    """Per-field crop arrays seen as one ``N x C x S x S`` sequence, without copying them into one."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0, *(len(part) for part in self.parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - self.offsets[part]]


def write_crops(path: Path, parts: Sequence[np.ndarray], channels: int, size: int) -> int:
    """Write the concatenation of ``parts`` as one .npy file without building it in memory."""
    total = sum(len(part) for part in parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(total, channels, size, size))
    start = 0
    for part in parts:
        array[start : start + len(part)] = part
        start += len(part)
    array.flush()
    del array
    return total
