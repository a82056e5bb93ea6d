"""CEP8 FISH spot counting: difference-of-Gaussians blobs, local maxima inside each nucleus.

A centromere spot is a diffraction-limited Gaussian a pixel or so wide. The difference of two
Gaussian blurs (sigma and 1.6 sigma, the usual LoG approximation) turns each spot into a peak and
flattens the slowly varying nuclear background (DAPI bleed-through, illumination), so a spot is a
local maximum of that response that stands ``spot_snr`` noise units above zero, measured on the
whole field. Spots are assigned to the nucleus they sit in, or within ``spot_margin`` pixels of
its edge (FISH signal and DAPI are not perfectly registered).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ctcid.config.segment import SegmentParams


@dataclass(frozen=True)
class Spots:
    """Detected spots of one field: ``rows``/``cols`` in pixels, ``label`` the nucleus (1-based)."""

    rows: np.ndarray
    cols: np.ndarray
    label: np.ndarray
    strength: np.ndarray  # DoG response in noise units


def spot_response(cep8: np.ndarray, sigma: float) -> np.ndarray:
    image = cep8.astype(np.float32)
    fine = cv2.GaussianBlur(image, (0, 0), sigma)
    coarse = cv2.GaussianBlur(image, (0, 0), 1.6 * sigma)
    return fine - coarse


def expand_labels(labels: np.ndarray, *distances: float) -> np.ndarray | list[np.ndarray]:
    """Grow every label by up to ``distance`` pixels into the background, nearest label wins.

    One distance gives one label image; several give a list, for the price of one transform.
    """
    grown_all = []
    if labels.any() and max(distances) > 0:
        # scipy's exact EDT: cv2.distanceTransform(DIST_MASK_PRECISE) varied in the last bit from
        # call to call, which made segmentation outputs differ between runs (docs/reproducibility.md).
        gap, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        owners = labels[rows, cols]
        for distance in distances:
            grown_all.append(np.where((labels == 0) & (gap <= distance), owners, labels))
    else:
        grown_all = [labels.copy() for _ in distances]
    return grown_all[0] if len(distances) == 1 else grown_all


def _robust_noise(response: np.ndarray) -> float:
    sample = response[::2, ::2]
    return max(1.4826 * float(np.median(np.abs(sample - np.median(sample)))), 1e-3)


def _valley_depth(response: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """How far the response along the segment a-b sinks below the lower of its two ends."""
    steps = max(abs(a[0] - b[0]), abs(a[1] - b[1])) * 2 + 1
    rows = np.rint(np.linspace(a[0], b[0], steps)).astype(int)
    cols = np.rint(np.linspace(a[1], b[1], steps)).astype(int)
    return float(min(response[a], response[b]) - response[rows, cols].min())


def _separate_spots(response: np.ndarray, rows: np.ndarray, cols: np.ndarray, label: np.ndarray,
                    min_dip: float, merge_px: float = 0.0) -> np.ndarray:
    """Keep-mask of candidate maxima: a maximum is its own spot only when the response dips by at
    least ``min_dip`` x its height between it and every brighter kept maximum of the same nucleus,
    and it lies at least ``merge_px`` from each of them.

    Two real spots a few pixels apart show a valley between them; a noise bump on the flank of a
    spot, or a lumpy spot, does not. A split signal (one centromere seen as two dots, as sister
    chromatids in G2) does show a valley: FISH scoring counts two signals closer than about one
    signal width as one, which is ``merge_px``.
    """
    keep = np.zeros(rows.size, dtype=bool)
    order = np.argsort(-response[rows, cols], kind="stable")
    kept_by_label: dict[int, list[int]] = {}
    for i in order:
        point = (rows[i], cols[i])
        height = response[point]
        brighter = kept_by_label.setdefault(int(label[i]), [])
        if all(
            _valley_depth(response, point, (rows[j], cols[j])) >= min_dip * height
            and np.hypot(rows[i] - rows[j], cols[i] - cols[j]) >= merge_px
            for j in brighter
        ):
            keep[i] = True
            brighter.append(i)
    return keep


def _local_peaks(response: np.ndarray, radius: int, snr: float) -> tuple[np.ndarray, float]:
    """Local maxima (window of ``radius``) standing ``snr`` noise units above zero, and that noise."""
    noise = _robust_noise(response)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return (response >= cv2.dilate(response, kernel)) & (response > snr * noise), noise


def _add_wide_spots(
    wide: np.ndarray, owner: np.ndarray, found: tuple[np.ndarray, ...], params: SegmentParams
) -> tuple[np.ndarray, ...]:
    """``found`` (rows, cols, label, strength) plus the spots only the wide filter sees.

    A signal out of the focal plane, or in a defocused cell, is too flat for the fine filter but
    a clear peak of the wide one. A wide peak within 2 wide sigmas of a spot already found is that
    spot (or a pair of them) seen coarsely, and is not counted again.
    """
    rows, cols, label, strength = found
    peaks, noise = _local_peaks(wide, 1, params.spot_snr)
    extra_rows, extra_cols = np.nonzero(peaks & (owner > 0))
    if extra_rows.size and rows.size:
        gap = np.hypot(extra_rows[:, None] - rows[None, :], extra_cols[:, None] - cols[None, :])
        alone = gap.min(axis=1) > 2 * params.spot_mass_sigma
        extra_rows, extra_cols = extra_rows[alone], extra_cols[alone]
    return (
        np.concatenate([rows, extra_rows]),
        np.concatenate([cols, extra_cols]),
        np.concatenate([label, owner[extra_rows, extra_cols]]),
        np.concatenate([strength, wide[extra_rows, extra_cols] / noise]),
    )


def detect_cep8_spots(cep8: np.ndarray, labels: np.ndarray, params: SegmentParams) -> Spots:
    """All CEP8 spots of a field that fall inside (or at the edge of) a labelled nucleus."""
    response = spot_response(cep8, params.spot_sigma)
    peaks, noise = _local_peaks(response, params.spot_min_distance, params.spot_snr)
    owner = expand_labels(labels, params.spot_margin)
    rows, cols = np.nonzero(peaks & (owner > 0))
    label = owner[rows, cols]
    keep = _separate_spots(response, rows, cols, label, params.spot_min_dip, params.spot_merge_px)
    rows, cols, label = rows[keep], cols[keep], label[keep]
    strength = response[rows, cols] / noise
    wide = spot_response(cep8, params.spot_mass_sigma) if params.spot_mass_sigma > 0 else None
    if wide is not None:
        rows, cols, label, strength = _add_wide_spots(wide, owner, (rows, cols, label, strength), params)
    if params.spot_min_relative > 0 and label.size:
        # A spot far dimmer than the brightest of its own nucleus is speckle or noise on a bright cell.
        # Measured as peak response, or as light collected at a wider scale (spot_mass_sigma): a signal
        # out of the focal plane spreads the same light wider (low peak, full mass), a
        # cross-hybridisation speck is simply faint (low both).
        brightness = strength if wide is None else wide[rows, cols]
        brightest = np.zeros(int(labels.max()) + 1, dtype=np.float32)
        np.maximum.at(brightest, label, brightness)
        keep = brightness >= params.spot_min_relative * brightest[label]
        rows, cols, label, strength = rows[keep], cols[keep], label[keep], strength[keep]
    return Spots(rows=rows, cols=cols, label=label, strength=strength)


def spots_per_nucleus(spots: Spots, n_nuclei: int) -> np.ndarray:
    return np.bincount(spots.label, minlength=n_nuclei + 1)[1:].astype(np.int16)
