"""Per-field intensity levels: the standardised crops do not depend on a site's exposure or offset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctcid.contracts import BACKGROUND_COLUMNS, SCALE_COLUMNS, STAINS
from ctcid.errors import CtcidError
from ctcid.intensity import (
    NOISE_FLOOR,
    Levels,
    estimate_levels,
    field_levels,
    level_columns,
    manifest_levels,
    standardise,
)
from factory import BACKGROUND, NOISE, draw_crops

SIZE = 40  # the segment stage's default crop size
CD45 = STAINS.index("CD45")


def field(kinds: list[str], seed: int) -> np.ndarray:
    return draw_crops(kinds, SIZE, np.random.default_rng(seed))


def imaged(crops: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """The same cells at another site: ``gain`` x the counts plus ``offset``, back to uint16."""
    return np.clip(np.rint(crops.astype(np.float64) * gain + offset), 0, 65535).astype(np.uint16)


MIXED = ["leukocyte"] * 20 + ["ctc"] * 5


def test_standardised_crops_do_not_depend_on_exposure_gain_or_offset() -> None:
    crops = field(MIXED, seed=1)
    brighter = imaged(crops, gain=1.6, offset=300)
    background, scale = estimate_levels(crops)
    background2, scale2 = estimate_levels(brighter)
    np.testing.assert_allclose(scale2, 1.6 * scale, rtol=0.01)
    np.testing.assert_allclose(background2, 1.6 * background + 300, atol=2)
    original = standardise(crops, field_levels(crops))
    shifted = standardise(brighter, field_levels(brighter))
    # rounding to whole counts is the only difference left
    np.testing.assert_allclose(shifted, original, atol=0.005)


def test_background_is_the_cameras_offset_and_a_typical_cell_reads_about_one() -> None:
    crops = field(MIXED, seed=2)
    background, scale = estimate_levels(crops)
    assert background.dtype == scale.dtype == np.float32
    np.testing.assert_allclose(background, BACKGROUND, atol=5)
    standard = standardise(crops, field_levels(crops))
    brightest = np.percentile(standard.reshape(len(crops), 3, -1), 99, axis=2)
    assert 0.7 < float(np.median(brightest[:, 0])) < 1.3  # the DAPI nucleus of a typical cell


def test_a_field_of_cd45_negative_ctcs_keeps_cd45_at_the_noise_floor() -> None:
    crops = field(["ctc"] * 20, seed=3)
    _, scale = estimate_levels(crops)
    # no CD45 ring anywhere: the scale is the floor of NOISE_FLOOR noise sigmas, not the noise itself
    assert scale[CD45] == pytest.approx(NOISE_FLOOR * NOISE, rel=0.25)
    standard = standardise(crops, field_levels(crops))
    assert float(np.percentile(standard[:, CD45], 99)) < 0.5  # CD45-negative stays well below 1


def test_half_ctcs_leave_the_cd45_scale_on_the_leukocytes() -> None:
    _, leukocytes = estimate_levels(field(["leukocyte"] * 20, seed=4))
    _, mixed = estimate_levels(field(["leukocyte", "ctc"] * 10, seed=5))
    assert mixed[CD45] == pytest.approx(leukocytes[CD45], rel=0.25)


def test_an_empty_field_has_neutral_levels() -> None:
    background, scale = estimate_levels(np.zeros((0, 3, SIZE, SIZE), np.uint16))
    np.testing.assert_array_equal(background, np.zeros(3))
    np.testing.assert_array_equal(scale, np.ones(3))
    levels = field_levels(np.zeros((0, 3, SIZE, SIZE), np.uint16))
    assert len(levels) == 0 and levels.scale.shape == (0, 3)


def test_crops_that_are_not_four_dimensional_are_refused() -> None:
    with pytest.raises(CtcidError, match="N x C x S x S"):
        estimate_levels(np.zeros((3, SIZE, SIZE), np.uint16))


def test_standardise_refuses_levels_that_do_not_fit_the_crops() -> None:
    crops = field(["leukocyte"] * 4, seed=6)
    with pytest.raises(CtcidError, match="levels for 3 crops x 3 channels do not fit"):
        standardise(crops, field_levels(crops[:3]))
    with pytest.raises(CtcidError, match="do not fit"):
        standardise(crops, Levels(np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32)))


def test_manifest_columns_round_trip_in_any_channel_order() -> None:
    channels = ["CD45", "DAPI", "CEP8"]
    order = [STAINS.index(c) for c in channels]
    crops = np.concatenate([field(MIXED, seed=7), field(["leukocyte"] * 5, seed=8)])[:, order]
    levels = Levels.concat([field_levels(crops[:25]), field_levels(crops[25:])], channels=3)
    columns = level_columns(levels, channels)
    assert set(columns) == set(BACKGROUND_COLUMNS + SCALE_COLUMNS)
    assert all(v.dtype == np.float32 and len(v) == 30 for v in columns.values())
    # a manifest column names its stain, whatever the crops' channel order
    np.testing.assert_array_equal(columns["scale_cd45"], levels.scale[:, 0])
    np.testing.assert_array_equal(columns["background_dapi"], levels.background[:, 1])
    back = manifest_levels(pd.DataFrame(columns), channels)
    np.testing.assert_array_equal(back.background, levels.background)
    np.testing.assert_array_equal(back.scale, levels.scale)
    in_stain_order = manifest_levels(pd.DataFrame(columns), list(STAINS))
    np.testing.assert_array_equal(in_stain_order.scale[:, STAINS.index("CD45")], levels.scale[:, 0])


def test_level_columns_refuse_unknown_channels() -> None:
    levels = Levels(np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32))
    with pytest.raises(CtcidError, match="channels must be DAPI, CEP8, CD45"):
        level_columns(levels, ["DAPI", "CEP8", "FITC"])


def manifest_of(n: int = 4) -> pd.DataFrame:
    levels = Levels.repeat(np.full(3, BACKGROUND), np.array([3700.0, 650.0, 1900.0]), n)
    return pd.DataFrame(level_columns(levels, STAINS))


def test_manifest_levels_name_missing_columns_and_the_fix() -> None:
    with pytest.raises(CtcidError, match=r"no intensity levels \(scale_cep8\).*re-run 'ctcid segment'"):
        manifest_levels(manifest_of().drop(columns="scale_cep8"), STAINS)


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_manifest_levels_refuse_a_bad_scale(value: float) -> None:
    manifest = manifest_of()
    manifest.loc[2, "scale_dapi"] = value
    with pytest.raises(CtcidError, match="missing, infinite or non-positive"):
        manifest_levels(manifest, STAINS)
