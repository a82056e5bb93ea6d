"""Small hand-drawn imFISH fields for the segmentation tests: discs, Gaussian spots, CD45 rings.

Each cell is fully specified (centre, radius, spot offsets, CD45 on/off), so a test knows exactly
what the segmentation should find. Intensities are camera counts like the simulator's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BACKGROUND = 250.0
NOISE = 20.0
DAPI_LEVEL = 4000.0
SPOT_PEAK = 2000.0
SPOT_SIGMA = 1.0
CD45_LEVEL = 2000.0


@dataclass
class DrawnCell:
    x: float
    y: float
    radius: float
    spots: list[tuple[float, float]] = field(default_factory=list)  # offsets from the centre, px
    cd45: bool = False
    aspect: float = 1.0  # minor / major axis of the nucleus


def _gaussian(shape: tuple[int, int], x: float, y: float, sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma * sigma))


def draw_field(cells: list[DrawnCell], size: int = 96, seed: int = 0) -> np.ndarray:
    """3 x size x size uint16 field (DAPI, CEP8, CD45) with mild blur and Gaussian noise."""
    rng = np.random.default_rng(seed)
    scale = 8  # draw nuclei at 8x and shrink: anti-aliased edges like a real optical image
    dapi_big = np.zeros((size * scale, size * scale), dtype=np.float32)
    cep8 = np.zeros((size, size), dtype=np.float32)
    cd45 = np.zeros((size, size), dtype=np.float32)
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    for cell in cells:
        stretch = np.sqrt(cell.aspect)
        axes = (int(cell.radius / stretch * scale), int(cell.radius * stretch * scale))
        centre = (int((cell.x + 0.5) * scale), int((cell.y + 0.5) * scale))
        cv2.ellipse(dapi_big, centre, axes, 30, 0, 360, 1.0, thickness=-1)
        for dx, dy in cell.spots:
            cep8 += SPOT_PEAK * _gaussian((size, size), cell.x + dx, cell.y + dy, SPOT_SIGMA)
        if cell.cd45:
            distance = np.hypot(cols - cell.x, rows - cell.y)
            membrane = 1.4 * cell.radius
            cd45 += CD45_LEVEL * np.exp(-0.5 * (distance - membrane) ** 2)
            cd45 += 0.3 * CD45_LEVEL * (distance < membrane)
    dapi = DAPI_LEVEL * cv2.resize(dapi_big, (size, size), interpolation=cv2.INTER_AREA)
    image = np.stack([dapi, cep8, cd45]) + BACKGROUND
    image = np.stack([cv2.GaussianBlur(channel, (0, 0), 0.8) for channel in image])
    image += rng.normal(0.0, NOISE, image.shape)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)
