"""What each cell puts on the specimen plane: DAPI nucleus, CEP8 FISH spots, CD45 membrane.

The specimen is the noise-free emitted light per channel in camera counts (exposure 1, flat
illumination), before the microscope (:mod:`ctcid.raw.simulate.optics`) blurs, shifts and samples it.
Every cell is drawn only in a window around itself, so a field costs time in proportion to its
cells, not to its area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ctcid.angles import polar_angle
from ctcid.config.simulate import SimulateParams
from ctcid.raw.simulate import artefacts
from ctcid.raw.simulate.cohort import DEBRIS, Cell
from ctcid.raw.simulate.optics import CD45, CEP8, DAPI, FOCUS_JITTER

# Spots closer than this many sigmas *as imaged* (spot and optical blur added in quadrature) are
# resolved as two (the Rayleigh-like limit for Gaussians). Measuring it before the blur left half of
# the pairs unresolvable in the image, a hidden overlap rate far above spot_overlap_prob.
SPOT_MIN_SEPARATION = 2.5
# Deliberately overlapping pair: closer than ~1.5 sigma, seen as one spot.
SPOT_OVERLAP_DISTANCE = (0.3, 1.5)
DIM_SPOT_WIDENING = 1.8  # out-of-focus spots spread their light over a wider disc
CD45_MEMBRANE_WIDTH = 1.0  # px, sigma of the membrane ring
CD45_CYTOPLASM_FILL = 0.3  # top and bottom membrane projected over the cell, relative to the ring


@dataclass(frozen=True)
class Annotation:
    """Where a rendered nucleus ended up: centroid and exclusive bounding box of its mask."""

    x: float
    y: float
    x0: int
    y0: int
    x1: int
    y1: int


def _window(
    cx: float, cy: float, half: float, shape: tuple[int, int]
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Clipped slices of a square window and the pixel offsets from the centre inside it."""
    height, width = shape
    y0, y1 = max(0, math.floor(cy - half)), min(height, math.ceil(cy + half) + 1)
    x0, x1 = max(0, math.floor(cx - half)), min(width, math.ceil(cx + half) + 1)
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    return slice(y0, y1), slice(x0, x1), dx, dy


def add_spot(plane: np.ndarray, x: float, y: float, sigma: float, peak: float) -> None:
    """A diffraction-limited spot: a 2-D Gaussian of ``peak`` counts at its centre."""
    rows, cols, dx, dy = _window(x, y, 3.5 * sigma, plane.shape)
    plane[rows, cols] += peak * np.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))


def _texture(shape: tuple[int, int], smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise (chromatin granularity, patchy staining)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), smoothness, borderType=cv2.BORDER_REFLECT)
    return noise / max(float(noise.std()), 1e-6)


def _spot_positions(
    cell: Cell, p: SimulateParams, sigmas: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Centres of the CEP8 copies inside the nucleus, resolvable unless an overlap is drawn."""
    copies = cell.cep8_copies
    overlap = copies >= 2 and rng.random() < p.spot_overlap_prob
    imaged = np.sqrt(sigmas**2 + (p.blur_sigma * FOCUS_JITTER[1]) ** 2)
    positions: list[tuple[float, float]] = []
    for index in range(copies):
        if overlap and index == copies - 1:
            # the last copy sits on top of another one: the camera sees one (brighter) spot
            anchor = positions[int(rng.integers(len(positions)))]
            distance = rng.uniform(*SPOT_OVERLAP_DISTANCE) * sigmas[index]
            angle = rng.uniform(0.0, 2 * math.pi)
            positions.append((anchor[0] + distance * math.cos(angle), anchor[1] + distance * math.sin(angle)))
            break
        for _ in range(60):
            angle = rng.uniform(0.0, 2 * math.pi)
            if rng.random() < p.spot_edge_prob:
                fraction = rng.uniform(0.8, 0.97)  # at the nuclear envelope, easy to miss or misassign
            else:
                fraction = 0.8 * math.sqrt(rng.random())  # uniform over the nuclear interior
            reach = fraction * float(cell.shape.radius_at(np.float32(angle)))
            candidate = (cell.x + reach * math.cos(angle), cell.y + reach * math.sin(angle))
            if all(
                math.dist(candidate, q) >= SPOT_MIN_SEPARATION * max(imaged[index], imaged[other])
                for other, q in enumerate(positions)
            ):
                break
        positions.append(candidate)  # a crowded nucleus keeps its last try: real spots can touch too
    return np.asarray(positions)


def _fragment_positions(cell: Cell, rng: np.random.Generator) -> np.ndarray:
    """A fragmented nucleus keeps its copies in its fragments, copy i in fragment i (cycling)."""
    positions = []
    for index in range(cell.cep8_copies):
        dx, dy, radius = cell.fragments[index % len(cell.fragments)]
        reach, angle = 0.5 * radius * math.sqrt(rng.random()), rng.uniform(0.0, 2 * math.pi)
        positions.append((cell.x + dx + reach * math.cos(angle), cell.y + dy + reach * math.sin(angle)))
    return np.asarray(positions)


def _draw_spots(specimen: np.ndarray, cell: Cell, p: SimulateParams, rng: np.random.Generator) -> None:
    copies = cell.cep8_copies
    sigmas = rng.uniform(*p.spot_sigma, copies)
    peaks = p.spot_peak * rng.uniform(*p.spot_brightness, copies)
    dim = rng.random(copies) < p.spot_dim_prob
    sigmas = np.where(dim, sigmas * DIM_SPOT_WIDENING, sigmas)
    peaks = np.where(dim, peaks * p.spot_dim_scale, peaks)
    if dim.any():
        cell.tags.append(artefacts.OUT_OF_PLANE)
    positions = _fragment_positions(cell, rng) if cell.fragments else _spot_positions(cell, p, sigmas, rng)
    split = p.artefacts.split_signal_prob
    for (x, y), sigma, peak in zip(positions, sigmas, peaks, strict=True):
        if split and rng.random() < split:
            for half_x, half_y, half_peak in artefacts.split_positions(x, y, float(peak), p.artefacts, rng):
                add_spot(specimen[CEP8], half_x, half_y, float(sigma), half_peak)
            if artefacts.SPLIT_SIGNAL not in cell.tags:
                cell.tags.append(artefacts.SPLIT_SIGNAL)
        else:
            add_spot(specimen[CEP8], x, y, float(sigma), float(peak))


def _draw_specks(specimen: np.ndarray, cell: Cell, p: SimulateParams, rng: np.random.Generator) -> None:
    specks = artefacts.speck_positions(cell, p.artefacts, p, rng)
    for x, y, sigma, peak in specks:
        add_spot(specimen[CEP8], x, y, sigma, peak)
    if specks:
        cell.tags.append(artefacts.SPECK)


def _nucleus_profile(
    cell: Cell, dx: np.ndarray, dy: np.ndarray, outline: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage (0-1) and thickness dome of the nucleus, or of its fragments."""
    if not cell.fragments:
        distance = np.hypot(dx, dy)
        inside = np.clip(outline - distance + 0.5, 0.0, 1.0)
        return inside, np.sqrt(np.clip(1.0 - (distance / outline) ** 2, 0.0, 1.0))
    inside = np.zeros(outline.shape, dtype=np.float32)
    dome = np.zeros_like(inside)
    for fx, fy, radius in cell.fragments:
        distance = np.hypot(dx - fx, dy - fy)
        inside = np.maximum(inside, np.clip(radius - distance + 0.5, 0.0, 1.0))
        dome = np.maximum(dome, np.sqrt(np.clip(1.0 - (distance / radius) ** 2, 0.0, 1.0)))
    return inside, dome


def _micronucleus(cell: Cell, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Coverage (0-1) of the cell's micronucleus in the window."""
    mx, my, radius = cell.micronucleus
    return np.clip(radius - np.hypot(dx - mx, dy - my) + 0.5, 0.0, 1.0)


def _reach(cell: Cell) -> float:
    """Radius of the window the cell is drawn in: its membrane, or a micronucleus beyond it."""
    reach = cell.outer_radius
    if cell.micronucleus is not None:
        mx, my, radius = cell.micronucleus
        reach = max(reach, math.hypot(mx, my) + radius)
    return reach + 3.0 * CD45_MEMBRANE_WIDTH + 1.0


def draw_cell(
    specimen: np.ndarray, nuclei: np.ndarray, cell: Cell, p: SimulateParams, rng: np.random.Generator
) -> Annotation:
    """Add one placed cell to the specimen stack and the nucleus mask; returns its annotation.

    An out-of-focus cell (``cell.defocus``) is drawn sharp on its own, blurred, then added; its
    annotation is still the sharp nucleus: the truth does not move when the focus does.
    """
    if not cell.defocus:
        return _draw_sharp(specimen, nuclei, cell, p, rng)
    own = np.zeros_like(specimen)
    annotation = _draw_sharp(own, nuclei, cell, p, rng)
    rows, cols, _, _ = _window(cell.x, cell.y, _reach(cell) + 4.0 * cell.defocus, specimen.shape[1:])
    for channel in range(specimen.shape[0]):
        specimen[channel, rows, cols] += cv2.GaussianBlur(
            own[channel, rows, cols], (0, 0), cell.defocus, borderType=cv2.BORDER_CONSTANT
        )
    return annotation


def _draw_sharp(
    specimen: np.ndarray, nuclei: np.ndarray, cell: Cell, p: SimulateParams, rng: np.random.Generator
) -> Annotation:
    rows, cols, dx, dy = _window(cell.x, cell.y, _reach(cell), specimen.shape[1:])
    distance = np.hypot(dx, dy)
    theta = polar_angle(dy, dx, np.float32)  # not np.arctan2: its bits depend on the CPU
    outline = cell.shape.radius_at(theta)

    # nucleus: anti-aliased outline, thicker (brighter) in the middle, granular chromatin
    inside, dome = _nucleus_profile(cell, dx, dy, outline)
    chromatin = 1.0 + cell.chromatin * _texture(inside.shape, 1.0, rng)
    dapi = cell.dapi_level * inside * (0.55 + 0.45 * dome) * np.clip(chromatin, 0.2, None)
    nuclei[rows, cols] |= inside >= 0.5
    if cell.micronucleus is not None:
        micronucleus = _micronucleus(cell, dx, dy)
        dapi = dapi + cell.dapi_level * 0.8 * micronucleus
        nuclei[rows, cols] |= micronucleus >= 0.5
    specimen[DAPI, rows, cols] += dapi

    if cell.cell_type == DEBRIS:
        # debris autofluoresces a little in every channel, a common false spot
        glow = rng.uniform(0.0, p.debris_autofluorescence, 2)
        specimen[CEP8, rows, cols] += glow[0] * dapi
        specimen[CD45, rows, cols] += glow[1] * dapi
    if cell.cd45_level > 0:
        membrane = outline * cell.cytoplasm_ratio
        ring = np.exp(-0.5 * ((distance - membrane) / CD45_MEMBRANE_WIDTH) ** 2)
        fill = CD45_CYTOPLASM_FILL * np.clip(membrane - distance + 0.5, 0.0, 1.0)
        harmonic = int(rng.integers(1, 4))
        patches = 1.0 + 0.3 * np.cos(harmonic * theta + rng.uniform(0.0, 2 * math.pi))
        patches *= 1.0 + 0.15 * _texture(ring.shape, 1.5, rng)
        membrane_light = cell.cd45_level * (ring + fill) * np.clip(patches, 0.2, None)
        if cell.cd45_arc is not None:
            membrane_light *= artefacts.arc_window(theta, cell.cd45_arc)
        specimen[CD45, rows, cols] += membrane_light
    if cell.cep8_copies:
        _draw_spots(specimen, cell, p, rng)
    if p.artefacts.nuclear_speck_mean and cell.cell_type != DEBRIS:
        _draw_specks(specimen, cell, p, rng)

    mask_rows, mask_cols = np.nonzero(inside >= 0.5)
    if len(mask_rows) == 0:  # sub-pixel debris: fall back to the pixel under the centre
        mask_rows = np.array([int(cell.y) - rows.start])
        mask_cols = np.array([int(cell.x) - cols.start])
    return Annotation(
        x=round(float(mask_cols.mean()) + cols.start, 2),
        y=round(float(mask_rows.mean()) + rows.start, 2),
        x0=int(mask_cols.min()) + cols.start,
        y0=int(mask_rows.min()) + rows.start,
        x1=int(mask_cols.max()) + cols.start + 1,
        y1=int(mask_rows.max()) + rows.start + 1,
    )


def draw_speckles(
    specimen: np.ndarray, nuclei: np.ndarray, p: SimulateParams, rng: np.random.Generator
) -> None:
    """Non-specific probe binding: dimmer FISH-like dots on the slide outside nuclei."""
    height, width = nuclei.shape
    count = int(rng.poisson(p.speckle_density * height * width))
    xs = rng.uniform(0, width - 1, count)
    ys = rng.uniform(0, height - 1, count)
    sigmas = rng.uniform(*p.spot_sigma, count)
    peaks = p.spot_peak * rng.uniform(*p.speckle_brightness, count)
    for x, y, sigma, peak in zip(xs, ys, sigmas, peaks, strict=True):
        if not nuclei[int(round(y)), int(round(x))]:
            add_spot(specimen[CEP8], float(x), float(y), float(sigma), float(peak))
