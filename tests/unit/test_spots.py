import numpy as np

from ctcid.config.segment import SegmentParams
from ctcid.segmentation.nuclei import segment_nuclei
from ctcid.segmentation.spots import detect_cep8_spots, expand_labels, spots_per_nucleus
from factory import DrawnCell, draw_field

PARAMS = SegmentParams()

# Spot layouts inside a nucleus of radius 10, at least 4 px apart (resolvable after blur).
LAYOUTS = {
    1: [(0, 0)],
    2: [(-3, 0), (3, 0)],
    3: [(-4, -2), (4, -2), (0, 4)],
    4: [(-4, -4), (4, -4), (-4, 4), (4, 4)],
    5: [(-5, -3), (0, -5), (5, -3), (-3, 4), (3, 4)],
}


def counts_for(cells: list[DrawnCell], size: int = 112) -> tuple[np.ndarray, list]:
    image = draw_field(cells, size=size)
    result = segment_nuclei(image[0], PARAMS)
    spots = detect_cep8_spots(image[1], result.labels, PARAMS)
    return spots_per_nucleus(spots, len(result.nuclei)), result.nuclei


def test_counts_known_copy_numbers():
    positions = [(20, 20), (56, 20), (92, 20), (20, 70), (60, 70)]
    cells = [DrawnCell(x, y, 10, spots=LAYOUTS[n]) for (x, y), n in zip(positions, LAYOUTS, strict=True)]
    counts, nuclei = counts_for(cells)
    by_position = {(round(n.x), round(n.y)): int(c) for n, c in zip(nuclei, counts, strict=True)}
    for (x, y), copies in zip(positions, LAYOUTS, strict=True):
        found = [c for (px, py), c in by_position.items() if abs(px - x) <= 1 and abs(py - y) <= 1]
        assert found == [copies], f"cell at {(x, y)} with {copies} copies counted {found}"


def test_a_nucleus_without_spots_counts_zero():
    counts, _ = counts_for([DrawnCell(40, 40, 9)], size=80)
    assert counts.tolist() == [0]


def test_spot_at_the_nuclear_edge_counts_but_a_far_one_does_not():
    # One spot 1 px beyond the edge (misregistered probe), one 8 px away on the slide (speckle).
    cells = [DrawnCell(40, 40, 8, spots=[(0, 0), (9, 0), (-16, 0)])]
    counts, _ = counts_for(cells, size=80)
    assert counts.tolist() == [2]


def test_two_spots_a_few_pixels_apart_are_two_and_one_blob_is_one():
    cells = [DrawnCell(30, 40, 9, spots=[(-2, 0), (2, 0)]), DrawnCell(70, 40, 9, spots=[(0, 0)])]
    counts, _ = counts_for(cells, size=100)
    assert counts.tolist() == [2, 1]


def test_spots_belong_to_their_own_nucleus():
    cells = [DrawnCell(30, 40, 9, spots=LAYOUTS[3]), DrawnCell(70, 40, 9, spots=LAYOUTS[2])]
    image = draw_field(cells, size=100)
    result = segment_nuclei(image[0], PARAMS)
    spots = detect_cep8_spots(image[1], result.labels, PARAMS)
    assert sorted(np.bincount(spots.label).tolist()[1:]) == [2, 3]
    assert (result.labels[spots.rows, spots.cols] == spots.label).all()


def test_expand_labels_grows_into_background_only_nearest_first():
    labels = np.zeros((5, 9), dtype=np.int32)
    labels[2, 1] = 1
    labels[2, 7] = 2
    grown = expand_labels(labels, 2)
    assert grown[2, 3] == 1 and grown[2, 5] == 2
    assert grown[2, 1] == 1 and grown[2, 7] == 2
    assert grown[0, 4] == 0  # farther than 2 px from both
