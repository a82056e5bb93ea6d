"""False-colour composites of imFISH fields: DAPI blue, CEP8 orange, CD45 red (the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# RGB colour of each stain, as a fluorescence microscope's viewer shows them.
STAIN_COLOURS = {"DAPI": (0.2, 0.4, 1.0), "CEP8": (1.0, 0.65, 0.0), "CD45": (1.0, 0.0, 0.1)}


def _stretch(channel: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.7) -> np.ndarray:
    low, high = np.percentile(channel, [low_pct, high_pct])
    return np.clip((channel.astype(np.float32) - low) / max(high - low, 1.0), 0.0, 1.0)


def false_colour(image: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """C x H x W field -> H x W x 3 uint8 RGB with each channel contrast-stretched on its own."""
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for index, name in enumerate(channels):
        rgb += _stretch(image[index])[..., None] * np.asarray(STAIN_COLOURS[name], dtype=np.float32)
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
