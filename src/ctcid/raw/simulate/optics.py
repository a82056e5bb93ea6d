"""The microscope and camera: from the emitted light of a specimen to 16-bit counts.

Order follows the light path: spectral bleed-through between neighbouring filter sets, slide
autofluorescence, uneven (vignetted) illumination, per-channel exposure, optical blur, channel
misregistration (the filter cubes do not align perfectly), then the camera: photon shot noise
(Poisson in photo-electrons), Gaussian read noise, a constant offset, and clipping to uint16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ctcid.config.simulate import SimulateParams

UINT16_MAX = 65535
# Internal channel order of the specimen stack; the writer reorders to params.channels.
DAPI, CEP8, CD45 = 0, 1, 2
FOCUS_JITTER = (0.85, 1.2)  # per-sample focus: blur_sigma scaled by this range
ILLUMINATION_OFFCENTRE = 0.15  # brightest point wanders this fraction of the field from the centre


@dataclass(frozen=True)
class Microscope:
    """The imaging state of one sample (one slide, one session): fixed for all its fields."""

    exposure: np.ndarray  # per channel, relative
    background: np.ndarray  # per channel, counts of slide autofluorescence
    illumination_centre: tuple[float, float]  # fraction of the field
    blur_sigma: float
    shifts: np.ndarray  # per channel (dx, dy) relative to DAPI, px

    @classmethod
    def draw(cls, p: SimulateParams, rng: np.random.Generator) -> Microscope:
        shifts = np.zeros((3, 2))
        for channel in (CEP8, CD45):
            radius = p.misregistration_px * math.sqrt(rng.random())
            angle = rng.uniform(0.0, 2 * math.pi)
            shifts[channel] = radius * math.cos(angle), radius * math.sin(angle)
        centre = 0.5 + rng.uniform(-ILLUMINATION_OFFCENTRE, ILLUMINATION_OFFCENTRE, 2)
        return cls(
            exposure=rng.uniform(*p.exposure_range, 3),
            background=rng.uniform(*p.background_counts, 3),
            illumination_centre=(float(centre[0]), float(centre[1])),
            blur_sigma=p.blur_sigma * float(rng.uniform(*FOCUS_JITTER)),
            shifts=shifts,
        )

    def illumination(self, height: int, width: int, falloff: float) -> np.ndarray:
        """Smooth vignetting: 1 at the brightest point, ``1 - falloff`` at the farthest corner."""
        cx, cy = self.illumination_centre[0] * (width - 1), self.illumination_centre[1] * (height - 1)
        ys = (np.arange(height, dtype=np.float32) - cy)[:, None]
        xs = (np.arange(width, dtype=np.float32) - cx)[None, :]
        corner = max(
            math.hypot(cx, cy),
            math.hypot(width - cx, cy),
            math.hypot(cx, height - cy),
            math.hypot(width - cx, height - cy),
        )
        return 1.0 - falloff * (xs * xs + ys * ys) / corner**2

    def acquire(self, specimen: np.ndarray, p: SimulateParams, rng: np.random.Generator) -> np.ndarray:
        """Image a 3 x H x W specimen (DAPI, CEP8, CD45 counts) into a uint16 stack, same order."""
        return self.camera(self.expose(specimen, p), p, rng)

    def expose(self, specimen: np.ndarray, p: SimulateParams) -> np.ndarray:
        """The light reaching the camera from a 3 x H x W specimen: everything but the camera's noise.

        It draws no random number: imaging the same specimen again with this microscope differs
        only in :meth:`camera`'s draws.
        """
        light = specimen.copy()
        # emission tails leak into the next filter set towards the red
        light[CEP8] += p.bleed_through * specimen[DAPI]
        light[CD45] += p.bleed_through * specimen[CEP8]
        light += self.background.astype(np.float32)[:, None, None]
        light *= self.illumination(*specimen.shape[1:], p.illumination_falloff)
        light *= self.exposure.astype(np.float32)[:, None, None]
        height, width = specimen.shape[1:]
        for channel in range(3):
            if self.blur_sigma > 0:
                light[channel] = cv2.GaussianBlur(
                    light[channel], (0, 0), self.blur_sigma, borderType=cv2.BORDER_REFLECT
                )
            dx, dy = self.shifts[channel]
            if dx or dy:
                shift = np.float32([[1, 0, dx], [0, 1, dy]])
                light[channel] = cv2.warpAffine(
                    light[channel],
                    shift,
                    (width, height),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT,
                )
        return light

    @staticmethod
    def camera(light: np.ndarray, p: SimulateParams, rng: np.random.Generator) -> np.ndarray:
        """The camera: shot noise, read noise, offset and clipping; every random draw of imaging."""
        electrons = rng.poisson(np.maximum(light, 0.0) / p.gain)
        counts = electrons * p.gain + p.camera_offset
        counts += rng.normal(0.0, p.read_noise, counts.shape) if p.read_noise > 0 else 0.0
        return np.clip(np.rint(counts), 0, UINT16_MAX).astype(np.uint16)
