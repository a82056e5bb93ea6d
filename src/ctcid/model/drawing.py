"""Marker signal drawn onto real crops: CEP8 spots inside a nucleus, a CD45 membrane ring, and the
levels to draw them at, measured on the same data.

Two users change a real cell in one property of the CTC criterion: the promotion gate's behaviour
probes (:mod:`ctcid.registry.behaviour`) and the training counterfactuals
(:mod:`ctcid.model.counterfactual`). Both draw with these functions, so a probe and a training crop
carry the same spots and the same ring. A crop is centred on its nucleus, as the segment stage cuts
it; images are ``size x size`` with peak 1, to be scaled by a level in camera counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The membrane ring the segment stage measures CD45 in: gap and width from the nuclear edge, px.
RING_GAP, RING_WIDTH = 1.0, 5.0
SPOT_SIGMA = 1.0  # px, an in-focus FISH spot after the optical blur
SPOT_REACH = 0.6  # added spots fall within this share of the nuclear radius


def signal_level(crops: np.ndarray, channel: int) -> float:
    """Typical marker signal above background: median over crops of (99th percentile - median)."""
    if len(crops) == 0:
        return 0.0
    values = crops[:, channel].reshape(len(crops), -1)
    return float(np.median(np.percentile(values, 99, axis=1) - np.median(values, axis=1)))


def nuclear_radii(cells: pd.DataFrame) -> np.ndarray:
    """The radius of a disc of each cell's nuclear ``area``, px."""
    return np.sqrt(cells["area"].to_numpy(dtype=np.float64) / np.pi)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the crop centre, where the segment stage puts the nucleus."""
    centre = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    return yy - centre, xx - centre


def ring_image(size: int, radius: float) -> np.ndarray:
    """A soft-edged membrane annulus around a nucleus of ``radius``, peak 1."""
    yy, xx = _grid(size)
    distance = np.hypot(yy, xx) - radius - RING_GAP
    inside = (distance >= 0) & (distance <= RING_WIDTH)
    return np.where(inside, 1.0, np.exp(-(np.minimum(np.abs(distance), np.abs(distance - RING_WIDTH)) ** 2)))


def spot_image(size: int, radius: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` Gaussian spots of peak 1 at random places within :data:`SPOT_REACH` of the radius."""
    yy, xx = _grid(size)
    image = np.zeros((size, size))
    for _ in range(count):
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0, SPOT_REACH) * radius
        cy, cx = reach * np.sin(angle), reach * np.cos(angle)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SPOT_SIGMA**2))
    return image
