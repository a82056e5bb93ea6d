"""Image-level facts about the crops array, as tables Great Expectations can check.

GX validates tables, not 4-D arrays, so the array is described twice: once as a one-row table of
its geometry (shape, dtype, length against the manifest), and, when that geometry lets pixels be
read per channel, as one row per crop of vectorised pixel statistics (computed chunk by chunk over
the memory-mapped file, so a paper-scale array never sits in memory as float).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ctcid.contracts import CROP_DTYPE

# The contract's pixel type's maximum is the saturation level.
SATURATED = np.iinfo(CROP_DTYPE).max
# A channel's dynamic range is its p99 - p1 spread: robust to a hot pixel or a zero-padded edge.
RANGE_PERCENTILES = (1.0, 99.0)
# Work in blocks of about this many bytes of float64 so memory stays flat on any array size.
_BLOCK_BYTES = 64 * 2**20


def channel_range_column(channel: str) -> str:
    return f"{channel.lower()}_range"


def crop_array_table(crops: np.ndarray, manifest_rows: int) -> pd.DataFrame:
    """One row describing the array's geometry; axes the array lacks read -1."""
    shape = list(crops.shape) + [-1] * max(0, 4 - crops.ndim)
    return pd.DataFrame(
        {
            "ndim": [crops.ndim],
            "n_crops": [shape[0]],
            "channels": [shape[1]],
            "height": [shape[2]],
            "width": [shape[3]],
            "dtype": [str(crops.dtype)],
            "manifest_rows": [manifest_rows],
        }
    )


def pixel_table_blocker(crops: np.ndarray, n_channels: int) -> str | None:
    """Why per-crop pixel statistics cannot be computed, or None when they can."""
    if crops.ndim != 4 or crops.shape[1] != n_channels:
        return f"crop array has shape {tuple(crops.shape)}, not N x {n_channels} x H x W"
    if crops.dtype.kind not in "uif":
        return f"crop array has dtype {crops.dtype}, not numeric"
    if 0 in crops.shape[2:]:
        return f"crop array has empty crops (shape {tuple(crops.shape)})"
    return None


def crop_table(crops: np.ndarray, channels: Sequence[str]) -> pd.DataFrame:
    """One row per crop (row i = crop i): content hash, non-finite pixels, blank/saturation/range stats.

    ``value_range`` is max - min over all channels (a blank crop has ~0); ``saturated_share`` the
    share of pixels at the uint16 maximum; ``<channel>_range`` the channel's p99 - p1 spread.
    """
    n = crops.shape[0]
    per_crop = max(1, int(np.prod(crops.shape[1:])) * 8)
    step = max(1, _BLOCK_BYTES // per_crop)
    starts = range(0, n, step) if n else [0]
    blocks = [_block_stats(np.asarray(crops[start : start + step]), channels) for start in starts]
    table = pd.concat(blocks, ignore_index=True)
    table.insert(0, "crop_index", np.arange(n, dtype=np.int64))
    return table


def _block_stats(block: np.ndarray, channels: Sequence[str]) -> pd.DataFrame:
    flat = block.reshape(block.shape[0], len(channels), block.shape[2] * block.shape[3])
    if flat.dtype.kind == "f":
        nonfinite = (~np.isfinite(flat)).sum(axis=(1, 2))
    else:
        nonfinite = np.zeros(flat.shape[0], dtype=np.int64)
    values = flat.astype(np.float64)
    low, high = np.percentile(values, RANGE_PERCENTILES, axis=2)
    spread = high - low
    columns: dict[str, np.ndarray | list[str]] = {
        "crop_hash": [hashlib.blake2b(crop.tobytes(), digest_size=16).hexdigest() for crop in block],
        "nonfinite_pixels": nonfinite.astype(np.int64),
        "value_range": values.max(axis=(1, 2)) - values.min(axis=(1, 2)),
        "saturated_share": (flat >= SATURATED).mean(axis=(1, 2)),
    }
    for index, channel in enumerate(channels):
        columns[channel_range_column(channel)] = spread[:, index]
    return pd.DataFrame(columns)
