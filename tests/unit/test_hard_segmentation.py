"""ctcid's options for hard slides (docs/segmentation.md#hard-slides): each fixes its artefact."""

from __future__ import annotations

import numpy as np

from ctcid.config.segment import SegmentParams
from ctcid.segmentation.nuclei import flatten_background, segment_nuclei
from ctcid.segmentation.spots import detect_cep8_spots, spots_per_nucleus
from factory import DAPI_LEVEL, DrawnCell, draw_field

DEFAULT = SegmentParams()
SIZE = 160


def gaussian(x: float, y: float, sigma: float, peak: float) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    return peak * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma * sigma))


def found_at(result, x: float, y: float, tolerance: float = 2.0) -> bool:
    return any(np.hypot(n.x - x, n.y - y) <= tolerance for n in result.nuclei)


def test_the_hard_options_are_off_by_default() -> None:
    assert DEFAULT.background_radius == 0 and DEFAULT.dim_nuclei_snr == 0
    assert DEFAULT.spot_merge_px == 0 and DEFAULT.spot_mass_sigma == 0


def test_background_flattening_removes_a_haze_and_keeps_the_nuclei() -> None:
    haze = gaussian(110, 40, 60.0, 0.6 * DAPI_LEVEL)  # a smear as wide as the hard preset's haze
    image = draw_field([DrawnCell(40, 40, 8), DrawnCell(110, 110, 8)], size=SIZE).astype(np.float32)
    image[0] += haze
    flat = flatten_background(image[0], radius=25)
    assert abs(flat[40, 110]) < 0.15 * haze.max()  # the top of the smear, far from both nuclei
    assert flat[40, 40] > 0.8 * DAPI_LEVEL  # a nucleus keeps its contrast

    plain = segment_nuclei(image[0].astype(np.uint16), DEFAULT)
    flattened = segment_nuclei(
        image[0].astype(np.uint16), DEFAULT.model_copy(update={"background_radius": 25})
    )
    assert len(flattened.nuclei) == 2 and found_at(flattened, 40, 40) and found_at(flattened, 110, 110)
    # on the flat threshold the smear is one more, haze-sized "nucleus" (or swallows one)
    assert len(plain.nuclei) != 2 or not (found_at(plain, 40, 40) and found_at(plain, 110, 110))


def test_a_dim_nucleus_beside_bright_ones_is_found_by_the_second_pass() -> None:
    cells = [DrawnCell(40, 40, 9), DrawnCell(120, 40, 9), DrawnCell(80, 115, 8, dapi=0.12)]
    image = draw_field(cells, size=SIZE)
    assert not found_at(segment_nuclei(image[0], DEFAULT), 80, 115)
    second = segment_nuclei(image[0], DEFAULT.model_copy(update={"dim_nuclei_snr": 12.0}))
    assert len(second.nuclei) == 3 and found_at(second, 80, 115)
    dim = min(second.nuclei, key=lambda n: np.hypot(n.x - 80, n.y - 115))
    assert 12 <= dim.x1 - dim.x0 <= 20  # outlined at its own edge, not its blur halo


def spot_counts(cep8: np.ndarray, dapi: np.ndarray, params: SegmentParams) -> list[int]:
    result = segment_nuclei(dapi, params)
    return spots_per_nucleus(detect_cep8_spots(cep8, result.labels, params), len(result.nuclei)).tolist()


def test_a_split_signal_counts_once_with_spot_merge_px() -> None:
    # one copy imaged as two dots 2.5 px apart (a split signal), one ordinary copy far from it
    image = draw_field([DrawnCell(80, 80, 11)], size=SIZE).astype(np.float32)
    for x, y in ((74.75, 78.0), (77.25, 78.0), (86.0, 86.0)):
        image[1] += gaussian(x, y, 0.9, 1500.0 if x < 80 else 2500.0)
    cep8, dapi = image[1].astype(np.uint16), image[0].astype(np.uint16)
    assert spot_counts(cep8, dapi, DEFAULT) == [3]
    assert spot_counts(cep8, dapi, DEFAULT.model_copy(update={"spot_merge_px": 3.0})) == [2]


def test_specks_are_dropped_and_out_of_focus_signals_kept_when_spots_are_weighed_by_their_light() -> None:
    image = draw_field([DrawnCell(80, 80, 12)], size=SIZE).astype(np.float32)
    image[1] += gaussian(74, 74, 1.0, 3000.0)  # an in-focus signal
    image[1] += gaussian(86, 76, 2.0, 900.0)  # a signal out of the focal plane: wide, same light
    image[1] += gaussian(78, 88, 0.9, 450.0)  # a cross-hybridisation speck: narrow and faint
    cep8, dapi = image[1].astype(np.uint16), image[0].astype(np.uint16)
    by_peak = DEFAULT.model_copy(update={"spot_min_relative": 0.2})
    by_light = by_peak.model_copy(update={"spot_mass_sigma": 2.0})
    assert spot_counts(cep8, dapi, DEFAULT) == [3]  # the default keeps the speck
    assert spot_counts(cep8, dapi, by_light) == [2]  # the signal and the out-of-plane one
    spots = detect_cep8_spots(cep8, segment_nuclei(dapi, by_light).labels, by_light)
    assert sorted(zip(spots.cols.tolist(), spots.rows.tolist(), strict=True)) == [(74, 74), (86, 76)]


def test_a_spot_too_flat_for_the_fine_filter_is_found_at_the_wide_scale() -> None:
    image = draw_field([DrawnCell(80, 80, 12)], size=SIZE).astype(np.float32)
    image[1] += gaussian(74, 76, 1.0, 3000.0)  # in focus
    image[1] += gaussian(87, 84, 2.6, 450.0)  # in a defocused cell: as much light, spread flat
    cep8, dapi = image[1].astype(np.uint16), image[0].astype(np.uint16)
    assert spot_counts(cep8, dapi, DEFAULT) == [1]
    wide = DEFAULT.model_copy(update={"spot_mass_sigma": 2.0, "spot_min_relative": 0.2})
    assert spot_counts(cep8, dapi, wide) == [2]
    spots = detect_cep8_spots(cep8, segment_nuclei(dapi, wide).labels, wide)
    assert (np.hypot(spots.cols - 87, spots.rows - 84) < 2).any()
