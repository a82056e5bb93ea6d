import numpy as np
import pytest

from ctcid.config.segment import SegmentParams
from ctcid.contracts import BACKGROUND_COLUMNS, SCALE_COLUMNS
from ctcid.intensity import estimate_levels
from ctcid.segmentation.analysis import analyse_field
from ctcid.segmentation.nuclei import segment_nuclei, split_touching
from factory import DrawnCell, draw_field

PARAMS = SegmentParams()


def centres(result) -> np.ndarray:
    return np.array([(n.x, n.y) for n in result.nuclei]).reshape(-1, 2)


def nearest(found: np.ndarray, x: float, y: float) -> float:
    return float(np.hypot(found[:, 0] - x, found[:, 1] - y).min())


def test_finds_every_separate_nucleus_at_its_centre():
    truth = [(20, 20, 6), (60, 18, 8), (30, 60, 12), (75, 70, 7), (50, 40, 9)]
    image = draw_field([DrawnCell(x, y, r) for x, y, r in truth], size=96)
    result = segment_nuclei(image[0], PARAMS)
    assert len(result.nuclei) == len(truth)
    found = centres(result)
    for x, y, _ in truth:
        assert nearest(found, x, y) < 1.0


def test_nuclei_come_in_raster_order_with_matching_labels():
    image = draw_field([DrawnCell(70, 20, 7), DrawnCell(20, 22, 7), DrawnCell(40, 70, 7)])
    result = segment_nuclei(image[0], PARAMS)
    assert [round(n.y) for n in result.nuclei] == sorted(round(n.y) for n in result.nuclei)
    assert result.labels.max() == len(result.nuclei)
    for nucleus in result.nuclei:
        assert result.labels[round(nucleus.y), round(nucleus.x)] == nucleus.label
        assert nucleus.x0 <= nucleus.x < nucleus.x1 and nucleus.y0 <= nucleus.y < nucleus.y1


@pytest.mark.parametrize(("r1", "r2", "overlap"), [(7, 7, 0.85), (7, 7, 1.0), (7, 12, 0.85)])
def test_touching_nuclei_are_split_in_two(r1, r2, overlap):
    distance = (r1 + r2) * overlap
    a, b = (30.0, 48.0), (30.0 + distance, 48.0)
    image = draw_field([DrawnCell(*a, r1), DrawnCell(*b, r2)])
    result = segment_nuclei(image[0], PARAMS)
    assert len(result.nuclei) == 2
    found = centres(result)
    assert nearest(found, *a) < 2.0 and nearest(found, *b) < 2.0


def test_touching_nuclei_stay_merged_when_splitting_is_off():
    image = draw_field([DrawnCell(30, 48, 7), DrawnCell(42, 48, 7)])
    result = segment_nuclei(image[0], PARAMS.model_copy(update={"split_touching": False}))
    assert len(result.nuclei) == 1


def test_one_elongated_nucleus_is_not_split():
    image = draw_field([DrawnCell(48, 48, 11, aspect=0.6)])
    assert len(segment_nuclei(image[0], PARAMS).nuclei) == 1


def test_an_empty_field_has_no_nuclei():
    image = draw_field([], size=96)
    result = segment_nuclei(image[0], PARAMS)
    assert result.nuclei == []
    assert not result.labels.any()


def test_blobs_below_the_minimum_area_are_dropped():
    image = draw_field([DrawnCell(30, 30, 2.5), DrawnCell(65, 65, 8)])
    result = segment_nuclei(image[0], PARAMS)
    assert len(result.nuclei) == 1
    assert nearest(centres(result), 65, 65) < 1.0


def test_split_touching_keeps_separate_blobs_whole():
    mask = np.zeros((40, 80), dtype=np.uint8)
    mask[10:30, 5:25] = 1
    mask[10:30, 50:70] = 1
    labels = split_touching(mask, PARAMS)
    assert len(np.unique(labels[labels > 0])) == 2
    assert (labels > 0).sum() == mask.sum()


LEVELS = list(BACKGROUND_COLUMNS + SCALE_COLUMNS)


def test_analysis_gives_every_cell_its_fields_levels_in_stain_order():
    image = draw_field([DrawnCell(24, 24, 7, cd45=True), DrawnCell(70, 60, 9, spots=[(0, 0)])], size=96)
    channels = ["CD45", "DAPI", "CEP8"]  # a lab's channel order: the columns still name the stain
    analysis = analyse_field(image[[2, 0, 1]], PARAMS, channels)
    assert len(analysis.table) == 2
    assert all(analysis.table[c].dtype == np.float32 for c in LEVELS)
    background, scale = estimate_levels(analysis.crops)
    by_stain = [1, 2, 0]  # DAPI, CEP8, CD45 in the crops' channel order
    for row in analysis.table[LEVELS].to_numpy():
        np.testing.assert_array_equal(row, np.concatenate([background[by_stain], scale[by_stain]]))


def test_an_empty_field_has_empty_level_columns():
    analysis = analyse_field(draw_field([], size=96), PARAMS, ["DAPI", "CEP8", "CD45"])
    assert analysis.table.empty and len(analysis.crops) == 0
    assert all(analysis.table[c].dtype == np.float32 for c in LEVELS)
