"""Per-nucleus features: shape, DAPI intensity, the CD45 membrane score and the paper's rule.

``cd45_ring_score`` measures CD45 on a ring just outside the nucleus, where a leukocyte's membrane
and cytoplasm lie, minus the local CD45 background, in units of the field's CD45 background noise.
The ring is shared out between neighbours (each ring pixel belongs to the nearest nucleus) and
summarised by the median over angular sectors rather than its mean: a CD45+ cell is stained all
round, while a CD45-negative cell touching a leukocyte picks up that neighbour's membrane on one
side only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ctcid.angles import polar_angle
from ctcid.config.segment import SegmentParams
from ctcid.segmentation.spots import expand_labels

# Background tiles for the CD45 flat-field estimate; cells cover a minority of each tile.
BACKGROUND_TILE = 64


def _per_label_sums(labels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of ``weights`` (pixel count when None) over each label 1..n."""
    flat = weights.ravel() if weights is not None else None
    return np.bincount(labels.ravel(), weights=flat, minlength=n + 1)[1 : n + 1]


def shape_features(contours: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Area (pixels), perimeter, circularity 4 pi A / P^2 and solidity A / hull area (float32).

    ``contours[i]`` is the outline of label ``i + 1``.
    """
    area = _per_label_sums(labels, len(contours))
    perimeter = np.array([cv2.arcLength(contour, True) for contour in contours])
    hull = np.array([cv2.contourArea(cv2.convexHull(contour)) for contour in contours])
    contour_area = np.array([cv2.contourArea(contour) for contour in contours])
    with np.errstate(divide="ignore", invalid="ignore"):
        circularity = np.where(perimeter > 0, 4 * math.pi * contour_area / perimeter**2, 0.0)
        solidity = np.where(hull > 0, contour_area / hull, 1.0)
    return {
        "area": area.astype(np.float32),
        "perimeter": perimeter.astype(np.float32),
        "circularity": np.clip(circularity, 0.0, 1.0).astype(np.float32),
        "solidity": np.clip(solidity, 0.0, 1.0).astype(np.float32),
    }


def dapi_features(dapi: np.ndarray, labels: np.ndarray, n: int, background: float) -> dict[str, np.ndarray]:
    """Background-corrected mean and integrated DAPI (the latter tracks DNA content)."""
    total = _per_label_sums(labels, n, dapi.astype(np.float32) - np.float32(background))
    count = _per_label_sums(labels, n)
    return {
        "dapi_mean": (total / np.maximum(count, 1)).astype(np.float32),
        "dapi_integrated": total.astype(np.float32),
    }


def _flat_background(image: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, float]:
    """Smooth background from per-tile medians of non-cell pixels, and the robust noise around it.

    Every second pixel in each direction is plenty for a median and four times cheaper.
    """
    height, width = image.shape
    ty, tx = max(1, round(height / BACKGROUND_TILE)), max(1, round(width / BACKGROUND_TILE))
    values = image[::2, ::2].astype(np.float32)
    free_mask = ~exclude[::2, ::2]
    free = values[free_mask]
    fallback = float(np.median(free)) if free.size else float(np.median(values))
    grid = np.full((ty, tx), fallback, dtype=np.float32)
    rows = np.linspace(0, values.shape[0], ty + 1).astype(int)
    cols = np.linspace(0, values.shape[1], tx + 1).astype(int)
    for i in range(ty):
        for j in range(tx):
            keep = free_mask[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            if keep.sum() >= 0.1 * keep.size:
                grid[i, j] = np.median(values[rows[i] : rows[i + 1], cols[j] : cols[j + 1]][keep])
    background = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    residual = values - background[::2, ::2]
    residual = residual[free_mask] if free.size else residual.ravel()
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    return background, max(noise, 1e-3)


def cd45_ring_score(
    cd45: np.ndarray, labels: np.ndarray, centres: np.ndarray, params: SegmentParams
) -> np.ndarray:
    """CD45 on the membrane ring of each nucleus above local background, in background-noise units.

    ``centres`` is an N x 2 array of nucleus centres (x, y) for labels 1..N. The ring is cut into
    ``cd45_sectors`` angular sectors around the centre; the score is the median of the sector means.
    """
    n = len(centres)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    inner, outer = expand_labels(labels, params.cd45_ring_gap, params.cd45_ring_gap + params.cd45_ring_width)
    # Background excludes the nuclei and their rings, where membranes and cytoplasm could lie.
    background, noise = _flat_background(cd45, outer > 0)
    rows, cols = np.nonzero((inner == 0) & (outer > 0))
    owner = outer[rows, cols] - 1
    values = cd45[rows, cols].astype(np.float32) - background[rows, cols]
    angle = polar_angle(rows - centres[owner, 1], cols - centres[owner, 0])  # CPU-independent bits
    sectors = params.cd45_sectors
    sector = np.minimum(((angle + np.pi) / (2 * np.pi) * sectors).astype(int), sectors - 1)
    bins = owner * sectors + sector
    total = np.bincount(bins, weights=values, minlength=n * sectors).reshape(n, sectors)
    count = np.bincount(bins, minlength=n * sectors).reshape(n, sectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    # A CD45+ cell is stained all round; a CD45-negative cell next to a leukocyte picks up the
    # neighbour's membrane in a few sectors only, which the median ignores.
    score = np.nanmedian(np.where(np.isnan(means).all(axis=1, keepdims=True), 0.0, means), axis=1)
    return (score / noise).astype(np.float32)


def rule_label(cd45_score: np.ndarray, cep8_spots: np.ndarray, params: SegmentParams) -> np.ndarray:
    """The paper's rule, 1 for CTC: CD45-negative (score below threshold) and >= 3 CEP8 spots."""
    cd45_negative = np.asarray(cd45_score) < params.cd45_threshold
    return (cd45_negative & (np.asarray(cep8_spots) >= params.rule_min_spots)).astype(np.int8)
