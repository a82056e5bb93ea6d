from pathlib import Path

import numpy as np

from ctcid.config.segment import SegmentParams
from ctcid.segmentation.crops import crop_window, cut_crops, write_crops
from ctcid.segmentation.features import cd45_ring_score, dapi_features, rule_label, shape_features
from ctcid.segmentation.nuclei import segment_nuclei
from factory import DrawnCell, draw_field

PARAMS = SegmentParams()


def scores(cells: list[DrawnCell], size: int = 128) -> tuple[np.ndarray, list]:
    image = draw_field(cells, size=size)
    result = segment_nuclei(image[0], PARAMS)
    centres = np.array([(n.x, n.y) for n in result.nuclei])
    order = [min(range(len(cells)), key=lambda i: np.hypot(cells[i].x - n.x, cells[i].y - n.y))
             for n in result.nuclei]
    assert sorted(order) == list(range(len(cells)))
    score = cd45_ring_score(image[2], result.labels, centres, PARAMS)
    return score[np.argsort(order)], result.nuclei


def test_cd45_score_separates_leukocytes_from_cd45_negative_cells():
    cells = [DrawnCell(25, 25, 7, cd45=True), DrawnCell(95, 25, 11), DrawnCell(25, 95, 7, cd45=True),
             DrawnCell(95, 95, 10)]
    score, _ = scores(cells)
    positive, negative = score[[0, 2]], score[[1, 3]]
    assert (positive >= PARAMS.cd45_threshold).all()
    assert (negative < PARAMS.cd45_threshold).all()
    assert positive.min() > 10 * max(abs(negative).max(), 0.1)


def test_cd45_negative_cell_touching_a_leukocyte_stays_negative():
    score, _ = scores([DrawnCell(50, 60, 11), DrawnCell(50 + 0.95 * 18, 60, 7, cd45=True)])
    assert score[0] < PARAMS.cd45_threshold <= score[1]


def test_rule_label_needs_cd45_negative_and_three_spots():
    cd45 = np.array([0.0, 0.0, 5.0, 0.2, 5.0], dtype=np.float32)
    spots = np.array([3, 2, 4, 6, 1], dtype=np.int16)
    assert rule_label(cd45, spots, PARAMS).tolist() == [1, 0, 0, 1, 0]


def test_shape_and_dapi_features_of_a_round_nucleus():
    image = draw_field([DrawnCell(48, 48, 10)])
    result = segment_nuclei(image[0], PARAMS)
    shape = shape_features([n.contour for n in result.nuclei], result.labels)
    assert abs(shape["area"][0] - np.pi * 10**2) < 0.2 * np.pi * 10**2
    assert shape["circularity"][0] > 0.8 and shape["solidity"][0] > 0.9
    dapi = dapi_features(image[0], result.labels, 1, result.background)
    assert 2000 < dapi["dapi_mean"][0] < 4500
    assert np.isclose(dapi["dapi_integrated"][0], dapi["dapi_mean"][0] * shape["area"][0], rtol=1e-3)


def test_shape_features_of_an_elongated_nucleus_are_less_circular():
    image = draw_field([DrawnCell(48, 48, 10, aspect=0.45)])
    result = segment_nuclei(image[0], PARAMS)
    shape = shape_features([n.contour for n in result.nuclei], result.labels)
    assert shape["circularity"][0] < 0.8


def test_crop_is_centred_and_zero_padded_at_the_border():
    image = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30) + 1
    inside = crop_window(image, x=15.2, y=10.4, size=8)
    assert inside.shape == (3, 8, 8) and inside.dtype == np.uint16
    assert (inside == image[:, 6:14, 11:19]).all()
    corner = crop_window(image, x=1, y=1, size=8)
    assert (corner[:, :3, :] == 0).all() and (corner[:, :, :3] == 0).all()
    assert (corner[:, 3:, 3:] == image[:, :5, :5]).all()


def test_write_crops_concatenates_parts_into_one_npy(tmp_path: Path):
    image = np.ones((3, 40, 40), dtype=np.uint16)
    parts = [cut_crops(image, [(10, 10), (20, 20)], 8), cut_crops(image * 2, [(30, 30)], 8)]
    path = tmp_path / "crops.npy"
    assert write_crops(path, parts, channels=3, size=8) == 3
    crops = np.load(path, mmap_mode="r")
    assert crops.shape == (3, 3, 8, 8) and crops.dtype == np.uint16
    assert crops[2].max() == 2 and crops[0].max() == 1


def test_write_crops_with_no_cells_writes_an_empty_array(tmp_path: Path):
    path = tmp_path / "crops.npy"
    write_crops(path, [], channels=3, size=8)
    assert np.load(path).shape == (0, 3, 8, 8)
