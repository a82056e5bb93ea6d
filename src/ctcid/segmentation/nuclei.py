"""Nucleus detection in DAPI: the paper's OpenCV recipe plus the splitting of touching nuclei.

docs/segmentation.md explains each choice:

1. Gaussian denoise of DAPI;
2. gradient-guided threshold: the intensity a nucleus's edge sits at is where the gradient
   magnitude peaks, so the threshold is the gradient-weighted mean intensity of the field between
   background and nuclei (see :func:`nuclear_threshold`); a floor in background-noise units keeps
   empty fields empty;
3. morphological close then open, outer contours filled (holes gone), small blobs dropped;
4. touching nuclei split at their contact line, seeded by distance-transform peaks whose
   inscribed circles do not overlap much (see :func:`split_touching`);
5. one :class:`Nucleus` per region in the area range: label, centre, bounding box, contour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ctcid.config.segment import SegmentParams


@dataclass(frozen=True)
class Nucleus:
    """One detected nucleus; ``label`` is its value in the field's label image (cell_idx + 1)."""

    label: int
    x: float
    y: float
    x0: int
    y0: int
    x1: int
    y1: int
    contour: np.ndarray  # OpenCV contour in field coordinates


@dataclass(frozen=True)
class NucleiResult:
    labels: np.ndarray  # int32 H x W, 0 background, i + 1 for nuclei[i]
    nuclei: list[Nucleus]
    background: float  # DAPI background level (median of the denoised field)
    noise: float  # robust standard deviation of the denoised background


def robust_background(image: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation; cells cover a small share of a field."""
    sample = image[::2, ::2] if image.size > 65536 else image
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    return median, max(1.4826 * mad, 1e-3)


def denoise(dapi: np.ndarray, params: SegmentParams) -> np.ndarray:
    k = params.gaussian_ksize
    return cv2.GaussianBlur(dapi.astype(np.float32), (k, k), 0)


# The background is estimated at a quarter of the resolution: it varies over tens of pixels.
BACKGROUND_DOWNSAMPLE = 4
BACKGROUND_PERCENTILE = 30  # of a window: below the nuclei (a clump fills less than 70 % of it)


def flatten_background(smooth: np.ndarray, radius: float) -> np.ndarray:
    """``smooth`` minus its slowly varying background (haze, uneven illumination).

    The background is a low percentile (BACKGROUND_PERCENTILE) of a square window ``2 radius + 1``
    wide around each pixel, smoothed, at a quarter of the resolution: nuclei cover less than that
    share of a window wider than them, so the percentile lands on the slide, haze included. (A
    grey opening, tried first, clipped more off the top of a smear: 17 % of a 60-pixel one was
    left, against under 15 % here.) The field's median of the result is a small offset that
    :func:`robust_background` then measures as usual.
    """
    height, width = smooth.shape
    small = cv2.resize(smooth, None, fx=1 / BACKGROUND_DOWNSAMPLE, fy=1 / BACKGROUND_DOWNSAMPLE,
                       interpolation=cv2.INTER_AREA)
    size = 2 * max(1, round(radius / BACKGROUND_DOWNSAMPLE)) + 1
    floor = ndimage.percentile_filter(small, BACKGROUND_PERCENTILE, size=size, mode="reflect")
    floor = cv2.GaussianBlur(floor, (0, 0), size / 4, borderType=cv2.BORDER_REFLECT)
    return smooth - cv2.resize(floor, (width, height), interpolation=cv2.INTER_LINEAR)


def nuclear_threshold(smooth: np.ndarray, background: float, noise: float, params: SegmentParams) -> float:
    """Gradient-weighted mean intensity, floored at ``threshold_min_snr`` noise units above background.

    Weighting each pixel's intensity by its squared gradient magnitude averages the intensities at
    which edges occur; for blurred bright objects on a dark background that is about half-way
    between background and the object plateau, whatever the exposure. Only pixels above the floor
    count, so the flat noisy background (weak gradients, but many of them) does not pull it down.
    """
    floor = background + params.threshold_min_snr * noise
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    weight = gx * gx + gy * gy
    weight[smooth < floor] = 0.0
    total = float(weight.sum())
    if total <= 0.0:
        return floor
    edge_level = float((weight * smooth).sum() / total)
    return max(floor, background + params.threshold_scale * (edge_level - background))


def foreground_mask(smooth: np.ndarray, threshold: float, params: SegmentParams) -> np.ndarray:
    """Binary nuclear mask (uint8 0/1): threshold, close, open, filled outer contours in the area range."""
    binary = (smooth > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.morph_ksize, params.morph_ksize))
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel, iterations=params.morph_iterations)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel, iterations=params.morph_iterations)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Touching nuclei form one blob, so only the lower bound is applied before splitting.
    kept = [c for c in contours if cv2.contourArea(c) >= params.min_area]
    mask = np.zeros_like(binary)
    cv2.drawContours(mask, kept, -1, 1, thickness=cv2.FILLED)
    return mask


def add_dim_nuclei(
    smooth: np.ndarray, mask: np.ndarray, background: float, noise: float, params: SegmentParams
) -> np.ndarray:
    """``mask`` plus the nuclei that the field-wide threshold left out because they are dim.

    A dim nucleus (weak staining, a hypochromatic cell) sits below a threshold set by the field's
    bright nuclei. Objects above ``dim_nuclei_snr`` noise units, clear of the nuclei already found,
    get a threshold of their own: the same gradient-weighted edge level as the field's, measured
    on the object alone (:func:`nuclear_threshold`), so the outline sits at the object's own edge.
    """
    grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    low = ((smooth > background + params.dim_nuclei_snr * noise) & (grown == 0)).astype(np.uint8)
    n, components, stats, _ = cv2.connectedComponentsWithStats(low, connectivity=8)
    found = mask.copy()
    for index in range(1, n):
        x, y, w, h, area = stats[index]
        if area < params.min_area:
            continue
        window = (slice(max(y - 2, 0), y + h + 2), slice(max(x - 2, 0), x + w + 2))
        own = components[window] == index
        level = nuclear_threshold(np.where(own, smooth[window], background), background, noise, params)
        found[window] |= (own & (smooth[window] > level)).astype(np.uint8)
    return foreground_mask(found.astype(np.float32), 0.5, params)


def _distance_peaks(distance: np.ndarray, params: SegmentParams) -> list[tuple[float, float, float]]:
    """Plateaus of local distance maxima as (row, col, height), higher than the smallest nucleus radius."""
    size = 2 * int(round(params.watershed_min_distance)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    is_peak = (distance >= cv2.dilate(distance, kernel)) & (distance >= params.min_peak_radius)
    n, plateau = cv2.connectedComponents(is_peak.astype(np.uint8), connectivity=8)
    peaks = []
    for index in range(1, n):
        rows, cols = np.nonzero(plateau == index)
        peaks.append((float(rows.mean()), float(cols.mean()), float(distance[rows, cols].max())))
    return peaks


def _group_peaks(peaks: list[tuple[float, float, float]], min_separation: float) -> np.ndarray:
    """Group ids of peaks: two peaks are one nucleus when their inscribed circles overlap a lot.

    Peaks ``a`` and ``b`` (heights = inscribed radii) join when their centre distance is below
    ``min_separation`` x (r_a + r_b). Touching nuclei sit at about the sum of their radii; the
    several distance peaks of one irregular or elongated nucleus lie well inside each other's
    inscribed circle.
    """
    group = list(range(len(peaks)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, (ra, ca, ha) in enumerate(peaks):
        for j in range(i + 1, len(peaks)):
            rb, cb, hb = peaks[j]
            if np.hypot(ra - rb, ca - cb) < min_separation * (ha + hb):
                group[root(j)] = root(i)
    roots = [root(i) for i in range(len(peaks))]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots])


def split_touching(mask: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Label image of the mask with touching nuclei split (int32, 0 background, arbitrary order).

    Seeds are the peaks of each blob's distance transform, one per round nucleus, grouped when
    they belong to one nucleus (:func:`_group_peaks`). Pixels then go to the seed whose inscribed
    circle (centre = peak, radius = peak height) has the nearest edge: an additively weighted
    Voronoi partition, which is where a watershed of the distance transform would cut two
    overlapping discs, on their contact line, also when their sizes differ. (Both library
    floodings were tried: ``cv2.watershed`` floods by neighbour differences, which are flat on a
    distance map, and cut through the larger nucleus; ``scipy.ndimage.watershed_ift`` let one
    seed take the whole blob.)
    """
    n, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    labels = components.astype(np.int32)
    if not params.split_touching:
        return labels
    next_label = n
    for index in range(1, n):
        x, y, w, h = stats[index, :4]
        if stats[index, cv2.CC_STAT_AREA] < 2 * params.min_area:
            continue
        # Zero margin so that the distance transform sees the field border as the blob's edge too.
        window = np.pad(components[y : y + h, x : x + w] == index, 1)
        # scipy's exact EDT, not cv2.distanceTransform(DIST_MASK_PRECISE): OpenCV's result on small
        # windows varied in the last bit from call to call (first call of a process differed), which
        # flipped ties between distance peaks and made segmentation differ from run to run.
        distance = ndimage.distance_transform_edt(window).astype(np.float32)
        peaks = _distance_peaks(distance, params)
        if len(peaks) < 2:
            continue
        groups = _group_peaks(peaks, params.split_min_separation)
        if groups.max() == 0:
            continue
        rows, cols = np.nonzero(window)
        seeds = np.asarray(peaks)
        gap = np.hypot(rows[:, None] - seeds[:, 0], cols[:, None] - seeds[:, 1]) - seeds[:, 2]
        owner = groups[np.argmin(gap, axis=1)]
        region = labels[y : y + h, x : x + w]
        for group in range(1, groups.max() + 1):
            part = owner == group
            region[rows[part] - 1, cols[part] - 1] = next_label
            next_label += 1
    return labels


def segment_nuclei(dapi: np.ndarray, params: SegmentParams) -> NucleiResult:
    """Detect nuclei in one DAPI image; nuclei come in raster order of their centres."""
    smooth = denoise(dapi, params)
    background, noise = robust_background(smooth)
    field_background = background  # reported in counts, also when the threshold works on a flattened field
    if params.background_radius > 0:
        smooth = flatten_background(smooth, params.background_radius)
        background, noise = robust_background(smooth)
    threshold = nuclear_threshold(smooth, background, noise, params)
    mask = foreground_mask(smooth, threshold, params)
    if params.dim_nuclei_snr > 0:
        mask = add_dim_nuclei(smooth, mask, background, noise, params)
    raw_labels = split_touching(mask, params)

    found = []
    for index, region in enumerate(ndimage.find_objects(raw_labels), start=1):
        if region is None:
            continue
        inside = raw_labels[region] == index
        rows, cols = np.nonzero(inside)
        if params.min_area <= rows.size <= params.max_area:
            found.append((rows.mean() + region[0].start, cols.mean() + region[1].start, region, inside))
    found.sort(key=lambda item: (round(item[0]), item[1]))

    labels = np.zeros(dapi.shape, dtype=np.int32)
    nuclei: list[Nucleus] = []
    for label, (row, col, region, inside) in enumerate(found, start=1):
        labels[region][inside] = label
        contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        offset = np.array([region[1].start, region[0].start], dtype=np.int32)
        contour = max(contours, key=cv2.contourArea).astype(np.int32) + offset
        nuclei.append(
            Nucleus(
                label=label, x=float(col), y=float(row),
                x0=region[1].start, y0=region[0].start, x1=region[1].stop, y1=region[0].stop,
                contour=contour,
            )
        )
    return NucleiResult(labels=labels, nuclei=nuclei, background=field_background, noise=noise)
