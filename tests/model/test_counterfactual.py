"""Label-consistent counterfactuals (ctcid.model.counterfactual): training crops changed in one term
of the CTC criterion, labelled by the criterion, drawn at levels measured on the given cells only.

The cells come from the test-data factory: CTCs, leukocytes, the two hard negatives (CD45-negative
diploid, CD45-positive aneuploid) and debris, their crops rendered as the segment stage cuts them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctcid.model.counterfactual import Counterfactuals, criterion_label, make_counterfactuals
from ctcid.model.drawing import SPOT_SIGMA, nuclear_radii, ring_image, signal_level
from factory import CROP_SIZE, draw_cells, draw_crops, make_manifest

CHANNELS = ("DAPI", "CEP8", "CD45")
DAPI, CEP8, CD45 = range(3)
THRESHOLD = 0.15  # cd45_score of the factory: 0.5-1.5 on CD45-positive cells, below 0.05 elsewhere
MIX = ("ctc", "leukocyte", "diploid_cd45neg", "aneuploid_cd45pos", "debris", "ctc", "diploid_cd45neg")
SPOT_MASS = 2 * np.pi * SPOT_SIGMA**2  # integrated intensity of one spot of peak 1


def training_cells(types=MIX * 6, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops and manifest rows with the columns the train stage adds: label, copies, cd45_positive."""
    rng = np.random.default_rng(seed)
    drawn = draw_cells(list(types), rng)
    crops = draw_crops(drawn, CROP_SIZE, rng)
    cells = make_manifest(cells=drawn, seed=seed)
    cells["label"] = cells["true_label"].astype(int)
    cells["copies"] = cells["true_cep8"].astype(float)
    cells["cd45_positive"] = (cells["true_cd45"] != "negative").astype(float)
    return crops, cells


def make(crops: np.ndarray, cells: pd.DataFrame, n: int = 40, seed: int = 3) -> Counterfactuals:
    return make_counterfactuals(crops, cells, CHANNELS, THRESHOLD, n, seed)


def by_source(cells: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    return cells.set_index("crop_index").loc[rows]


def centre_distance(size: int = CROP_SIZE) -> np.ndarray:
    centre = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    return np.hypot(yy - centre, xx - centre)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, pd.DataFrame]:
    return training_cells()


@pytest.fixture(scope="module")
def made(data) -> Counterfactuals:
    return make(*data)


def test_every_label_is_the_criterions_and_half_are_of_each_kind(made: Counterfactuals) -> None:
    assert len(made) == 40 and made.crops.shape == (40, 3, CROP_SIZE, CROP_SIZE)
    assert made.crops.dtype == np.float32 and made.source_rows.dtype == np.int64
    assert made.labels.dtype == np.int64 and made.copies.dtype == made.cd45_positive.dtype == np.float32
    np.testing.assert_array_equal(made.labels, criterion_label(made.copies, made.cd45_positive))
    assert (made.labels == 1).sum() == (made.labels == 0).sum() == 20


def test_the_criterion_needs_three_copies_and_no_cd45() -> None:
    copies = np.array([2, 3, 5, 3, np.nan, 4])
    positive = np.array([0, 0, 0, 1, 0, np.nan])
    np.testing.assert_array_equal(criterion_label(copies, positive), [0, 1, 1, 0, 0, 1])


def test_spots_go_to_cd45_negative_diploid_non_ctcs_inside_the_nucleus_and_nowhere_else(data, made) -> None:
    crops, cells = data
    spotted = made.labels == 1
    sources = by_source(cells, made.source_rows[spotted])
    assert set(sources["true_cell_type"]) == {"diploid_cd45neg"}  # no debris, CTC or CD45+ cell
    before = crops[made.source_rows[spotted]].astype(np.float32)
    after = made.crops[spotted]
    np.testing.assert_array_equal(after[:, [DAPI, CD45]], before[:, [DAPI, CD45]])
    added = after[:, CEP8] - before[:, CEP8]
    assert added.min() > -1e-3
    distance = centre_distance()
    for image, radius in zip(added, nuclear_radii(sources), strict=True):
        assert image[distance <= radius].sum() >= 0.95 * image.sum()
        assert image[distance > radius + 3].max() < 1e-3 * image.max()
    assert not np.any(made.cd45_positive[spotted])


def test_the_spots_added_bring_the_copies_to_three_to_five_at_the_datas_spot_level(data, made) -> None:
    crops, cells = data
    spotted = made.labels == 1
    level = signal_level(crops[cells["cep8_spots"].to_numpy() >= 1].astype(np.float32), CEP8)
    added = (made.crops[spotted, CEP8] - crops[made.source_rows[spotted], CEP8]).sum(axis=(1, 2))
    gained = made.copies[spotted] - by_source(cells, made.source_rows[spotted])["copies"].to_numpy()
    assert set(made.copies[spotted].tolist()) <= {3.0, 4.0, 5.0}
    assert len(set(made.copies[spotted].tolist())) > 1
    np.testing.assert_allclose(added / (level * SPOT_MASS), gained, rtol=0.02)


def test_a_ring_changes_a_ctcs_cd45_only_at_the_datas_cd45_level(data, made) -> None:
    crops, cells = data
    ringed = made.labels == 0
    sources = by_source(cells, made.source_rows[ringed])
    assert set(sources["true_cell_type"]) == {"ctc"}
    before = crops[made.source_rows[ringed]].astype(np.float32)
    after = made.crops[ringed]
    np.testing.assert_array_equal(after[:, [DAPI, CEP8]], before[:, [DAPI, CEP8]])
    level = signal_level(crops[cells["cd45_positive"].to_numpy() == 1].astype(np.float32), CD45)
    rings = np.stack([level * ring_image(CROP_SIZE, r) for r in nuclear_radii(sources)])
    np.testing.assert_allclose(after[:, CD45] - before[:, CD45], rings, atol=0.05)
    np.testing.assert_array_equal(made.copies[ringed], sources["copies"].to_numpy(dtype=np.float32))
    assert np.all(made.cd45_positive[ringed] == 1)


def test_the_same_seed_makes_the_same_counterfactuals(data, made) -> None:
    again, other = make(*data), make(*data, seed=4)
    for name in ("crops", "source_rows", "labels", "copies", "cd45_positive"):
        np.testing.assert_array_equal(getattr(again, name), getattr(made, name))
    assert not np.array_equal(other.crops, made.crops)


def test_a_memory_map_gives_the_same_and_is_left_untouched(data, made, tmp_path) -> None:
    crops, cells = data
    np.save(tmp_path / "crops.npy", crops)
    mapped = np.load(tmp_path / "crops.npy", mmap_mode="r")
    np.testing.assert_array_equal(make(mapped, cells).crops, made.crops)
    np.testing.assert_array_equal(mapped, crops)


def test_without_sources_a_kind_is_empty_and_both_give_empty_arrays() -> None:
    crops, cells = training_cells(["leukocyte", "aneuploid_cd45pos", "debris"] * 4)
    empty = make(crops, cells)
    assert len(empty) == 0 and empty.crops.shape == (0, 3, CROP_SIZE, CROP_SIZE)
    assert empty.crops.dtype == np.float32 and empty.source_rows.dtype == empty.labels.dtype == np.int64
    assert empty.copies.dtype == empty.cd45_positive.dtype == np.float32
    crops, cells = training_cells(["ctc", "leukocyte"] * 4)
    only_rings = make(crops, cells, n=10)
    assert len(only_rings) == 5 and not only_rings.labels.any()
    assert len(make(crops, cells, n=0)) == 0


def test_few_sources_are_drawn_again_and_many_are_not(data) -> None:
    crops, cells = data
    few = make(crops, cells, n=200)
    assert len(few) == 200 and len(np.unique(few.source_rows[few.labels == 1])) == 12  # 12 diploid sources
    many = make(crops, cells, n=8)
    assert len(np.unique(many.source_rows)) == 8


def test_unknown_copies_count_as_two_and_cd45_falls_back_on_the_segment_call(data) -> None:
    crops, cells = data
    unknown = cells.assign(
        copies=cells["copies"].where(cells["true_cell_type"] != "diploid_cd45neg"),
        cd45_positive=np.nan,  # every cell falls back on cd45_score >= THRESHOLD, as the factory drew it
    )
    made, known = make(crops, unknown), make(crops, cells)
    np.testing.assert_array_equal(made.crops, known.crops)
    np.testing.assert_array_equal(made.copies, known.copies)


def test_levels_are_measured_on_the_given_cells_only(data, made) -> None:
    crops, cells = data
    others = training_cells(MIX, seed=9)[0].astype(np.float32)
    others[:, [CEP8, CD45]] *= 10  # bright cells the fit does not train on (test crops, say)
    with_others = np.concatenate([crops.astype(np.float32), others])
    np.testing.assert_array_equal(make(with_others, cells).crops, made.crops)

    doubled = crops.astype(np.float32)
    doubled[:, CEP8] *= 2
    twice = make(doubled, cells)
    spotted = made.labels == 1
    added = made.crops[spotted, CEP8] - crops[made.source_rows[spotted], CEP8]
    added_twice = twice.crops[spotted, CEP8] - doubled[made.source_rows[spotted], CEP8]
    np.testing.assert_allclose(added_twice, 2 * added, atol=0.05)
