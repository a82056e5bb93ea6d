"""The shared test-data factory keeps the contracts, so tests built on it test the pipeline's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctcid.contracts import ANNOTATION_COLUMNS, CELL_TYPES, CROP_DTYPE, MANIFEST_SCHEMA, NULLABLE_COLUMNS
from factory import LOOKS, draw_cells, draw_crop, draw_crops, is_ctc, make_annotations, make_manifest


def assert_follows_the_manifest_schema(table: pd.DataFrame) -> None:
    assert list(table.columns) == list(MANIFEST_SCHEMA)
    for column, dtype in MANIFEST_SCHEMA.items():
        assert table[column].dtype == dtype, column


def test_a_default_manifest_follows_the_schema() -> None:
    table = make_manifest(12)
    assert_follows_the_manifest_schema(table)
    assert table["crop_index"].tolist() == list(range(12))
    assert table["cell_uid"].is_unique and table["matched"].all()
    assert (table["x0"] <= table["x"]).all() and (table["x1"] <= table["field_width"]).all()


def test_given_columns_win_and_the_rest_follows_the_cells() -> None:
    labels = np.array([1, 0, np.nan, 0, 1])
    table = make_manifest(true_label=labels, sample=["A", "A", "A", "B", "B"], cd45_score=0.0)
    assert_follows_the_manifest_schema(table)
    assert table["cell_uid"].tolist() == ["A/f000/0", "A/f000/1", "A/f000/2", "B/f000/0", "B/f000/1"]
    assert table["matched"].tolist() == [True, True, False, True, True]
    assert table.loc[2, list(NULLABLE_COLUMNS)].isna().all()
    assert table["true_cell_type"].tolist()[:2] == ["ctc", "leukocyte"]
    assert (table["cd45_score"] == 0).all()
    # the rule reads the given CD45 score and the CTCs' 3-5 spots
    assert table["rule_label"].tolist() == (table["cep8_spots"] >= 3).astype(int).tolist()
    with pytest.raises(TypeError, match="not manifest columns"):
        make_manifest(3, label=[0, 1, 0])


def test_every_contract_cell_type_has_a_look_and_only_ctcs_are_ctc() -> None:
    assert set(LOOKS) == set(CELL_TYPES)
    assert [t for t in CELL_TYPES if is_ctc(t)] == ["ctc"]


def test_crops_follow_the_contract_and_show_each_type() -> None:
    cells = draw_cells(list(CELL_TYPES) * 4, np.random.default_rng(0))
    crops = draw_crops(cells, 24, np.random.default_rng(1))
    assert crops.shape == (len(cells), 3, 24, 24) and crops.dtype == CROP_DTYPE
    centre = crops[:, :, 10:14, 10:14].astype(float).mean(axis=(2, 3))
    ring = crops[:, 2].astype(float).mean(axis=(1, 2))
    for kind, look in LOOKS.items():
        rows = (cells["cell_type"] == kind).to_numpy()
        assert (centre[rows, 0] > 600).all(), kind  # a nucleus in the middle (debris is dim)
        assert ((ring[rows] > 400) == look.cd45).all(), kind


def test_equally_seeded_crops_differ_only_where_asked() -> None:
    def crop(**cell) -> np.ndarray:
        return draw_crop(24, radius=7.0, rng=np.random.default_rng(5), **cell).astype(int)

    plain, ringed, more = crop(spots=2, cd45=False), crop(spots=2, cd45=True), crop(spots=5, cd45=False)
    assert (plain[:2] == ringed[:2]).all() and (ringed[2] - plain[2]).sum() > 0
    assert (plain[[0, 2]] == more[[0, 2]]).all() and (more[1] - plain[1]).sum() > 0


def test_annotations_have_the_contract_columns_and_labels_follow_types() -> None:
    table = make_annotations(cell_type=list(CELL_TYPES))
    assert list(table.columns) == list(ANNOTATION_COLUMNS)
    assert table["label"].tolist() == ["non-CTC", "CTC", "non-CTC", "non-CTC", "non-CTC"]
    assert table["cell_id"].is_unique
