import json
import math
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from ctcid.config.segment import SegmentParams
from ctcid.evaluation.drift import (
    CELLS,
    FIELD_FEATURES,
    IMAGING,
    DriftReference,
    drift_summary,
    feature_names,
    field_feature_table,
    field_features,
    fit_reference,
    image_features,
    sample_drift,
)
from ctcid.raw.fields import write_field
from ctcid.segmentation.analysis import analyse_field
from factory import DrawnCell, draw_crops, draw_field, make_manifest

CHANNELS = ["DAPI", "CEP8", "CD45"]
SEG = SegmentParams(crop_size=24)
SIZE = 128
IMAGE_FEATURES = feature_names(CHANNELS)[:9]


def _spots(rng: np.random.Generator, n: int, radius: float) -> list[tuple[float, float]]:
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
    return [(0.5 * radius * float(np.cos(a)), 0.5 * radius * float(np.sin(a))) for a in angles]


def site_cells(seed: int) -> list[DrawnCell]:
    """5-8 separate cells on a jittered grid: at least 3 leukocytes (CD45 ring, 2 spots), some CTCs."""
    rng = np.random.default_rng(seed)
    grid = [(x, y) for x in range(20, SIZE - 10, 30) for y in range(20, SIZE - 10, 30)]
    cells = []
    for k, i in enumerate(rng.choice(len(grid), int(rng.integers(5, 9)), replace=False)):
        x, y = grid[i][0] + rng.uniform(-3, 3), grid[i][1] + rng.uniform(-3, 3)
        if k < 3 or rng.random() < 0.7:
            radius = rng.uniform(4.0, 5.0)
            cells.append(DrawnCell(x, y, radius, spots=_spots(rng, 2, radius), cd45=True))
        else:
            radius = rng.uniform(6.0, 8.0)
            cells.append(DrawnCell(x, y, radius, spots=_spots(rng, int(rng.integers(3, 5)), radius)))
    return cells


def features_of(image: np.ndarray) -> dict[str, float]:
    analysis = analyse_field(image, SEG, CHANNELS)
    return field_features(image, analysis.table, analysis.crops, CHANNELS)


def site_field(seed: int) -> np.ndarray:
    return draw_field(site_cells(seed), size=SIZE, seed=seed)


def second_scanner(image: np.ndarray, seed: int) -> np.ndarray:
    """Another scanner: 1.8x the counts and a noisier camera (sigma 60)."""
    noise = np.random.default_rng(seed).normal(0.0, 60.0, image.shape)
    return np.clip(np.rint(image * 1.8 + noise), 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def site() -> tuple[pd.DataFrame, DriftReference]:
    table = pd.DataFrame([features_of(site_field(seed)) for seed in range(40)])
    return table, fit_reference(table)


def gaussian_table(n: int, seed: int, columns=("a", "b", "c", "d", "e")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(len(columns), len(columns)))
    values = rng.normal(size=(n, len(columns))) @ mixing + rng.uniform(-50, 50, len(columns))
    return pd.DataFrame(values, columns=list(columns))


# --- features -------------------------------------------------------------------------------------


def test_feature_names_follow_the_channels():
    names = feature_names(["CD45", "DAPI", "CEP8"])
    assert names[:3] == ["CD45_background", "CD45_noise", "CD45_signal"]
    assert names[9:13] == ["nucleus_area", "dapi_mean", "cd45_score", "cep8_spots"]
    assert names[13:] == [f"input_{c}_{s}" for c in ("CD45", "DAPI", "CEP8") for s in ("mean", "std")]
    assert list(FIELD_FEATURES) == feature_names(CHANNELS)
    assert "nuclei" not in names


def test_noise_estimate_finds_the_camera_sigma_and_ignores_cells():
    rng = np.random.default_rng(0)
    flat = np.full((3, 256, 256), 300.0)
    noisy = np.clip(np.rint(flat + rng.normal(0.0, 20.0, flat.shape)), 0, 65535).astype(np.uint16)
    with_cells = flat.copy()
    for k in range(12):
        for channel in with_cells:
            cv2.circle(channel, (20 + 19 * k, 40 + 15 * (k % 4)), 8, 5000.0, thickness=-1)
    with_cells = cv2.GaussianBlur(with_cells.transpose(1, 2, 0), (0, 0), 0.8).transpose(2, 0, 1)
    with_cells = np.clip(np.rint(with_cells + rng.normal(0.0, 20.0, flat.shape)), 0, 65535).astype(np.uint16)
    plain, cells = image_features(noisy, CHANNELS), image_features(with_cells, CHANNELS)
    for c in CHANNELS:
        assert plain[f"{c}_noise"] == pytest.approx(20.0, rel=0.1)
        assert cells[f"{c}_noise"] == pytest.approx(plain[f"{c}_noise"], rel=0.06)
        assert plain[f"{c}_background"] == pytest.approx(300.0, abs=1.0)
        assert cells[f"{c}_signal"] > 4000 > 200 > plain[f"{c}_signal"]


def test_image_features_are_fast_on_a_full_field():
    image = np.random.default_rng(1).integers(0, 4000, (3, 512, 512), dtype=np.uint16)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        image_features(image, CHANNELS)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.05


def test_cell_features_use_medians_and_leukocyte_spots():
    manifest = make_manifest(
        4, area=[50.0, 60.0, 70.0, 500.0], cd45_score=[1.2, 1.5, 0.0, 0.1], cep8_spots=[2, 1, 5, 6]
    )
    crops = draw_crops(["leukocyte"] * 4, size=24)
    image = draw_field([], size=64)
    found = field_features(image, manifest, crops, CHANNELS)
    assert list(found) == feature_names(CHANNELS)
    assert found["nucleus_area"] == pytest.approx(65.0)
    assert found["cd45_score"] == pytest.approx(0.65)
    assert found["cep8_spots"] == pytest.approx(1.5)  # the two cells with cd45_score >= 1
    assert found["input_CEP8_mean"] == pytest.approx(crops[:, 1].mean(axis=(1, 2)).mean())
    assert found["input_DAPI_std"] == pytest.approx(crops[:, 0].std(axis=(1, 2)).mean())
    no_leukocytes = field_features(image, manifest.assign(cd45_score=0.0), crops, CHANNELS)
    assert math.isnan(no_leukocytes["cep8_spots"])


def test_an_empty_field_has_nan_cell_features_and_a_finite_score(site):
    _, reference = site
    found = features_of(draw_field([], size=SIZE, seed=5))
    cell_and_input = [n for n in feature_names(CHANNELS) if n not in IMAGE_FEATURES]
    assert all(math.isnan(found[n]) for n in cell_and_input)
    assert all(math.isfinite(found[n]) for n in IMAGE_FEATURES)
    scored = reference.score(pd.DataFrame([found]))
    assert np.isfinite(scored["drift_score"]).all()
    assert bool(scored["drift_flag"].iloc[0])  # no stained structure at all: not like the reference
    assert (
        "missing: nucleus_area, dapi_mean, cd45_score, cep8_spots, input_DAPI_mean"
        in (scored["drift_reason"].iloc[0])
    )


def test_field_feature_table_reads_the_manifest_fields(tmp_path):
    cells = site_cells(3)
    image = draw_field(cells, size=SIZE, seed=3)
    analysis = analyse_field(image, SEG, CHANNELS)
    n = len(analysis.table)
    write_field(tmp_path / "S1" / "f000.tif", image, CHANNELS)
    write_field(tmp_path / "S1" / "f001.tiff", draw_field([], size=SIZE, seed=4), CHANNELS)
    (tmp_path / "S2").mkdir()
    (tmp_path / "S2" / "f000.tif").write_bytes(b"not a tiff")
    # the field's cells sit after two rows of another field, and in reverse crop order
    other = np.zeros((2, 3, 24, 24), dtype=np.uint16)
    crops = np.concatenate([other, analysis.crops[::-1]])
    columns = {
        c: analysis.table[c].to_numpy()[::-1] for c in ("area", "dapi_mean", "cd45_score", "cep8_spots")
    }
    manifest = make_manifest(
        n + 2,
        sample=["S2", "S2", *["S1"] * n],
        field=["f000", "f000", *["f000"] * n],
        **{c: np.concatenate([[1.0, 1.0], v]) for c, v in columns.items()},
    )
    fields = pd.DataFrame({"sample": ["S1", "S1", "S2"], "field": ["f000", "f001", "f000"]})
    table = field_feature_table(tmp_path, manifest, crops, CHANNELS, fields=fields)
    assert list(table.columns) == ["sample", "field", *feature_names(CHANNELS)]
    assert table[["sample", "field"]].values.tolist() == [["S1", "f000"], ["S1", "f001"]]
    expected = features_of(image)
    assert table.iloc[0][feature_names(CHANNELS)].to_dict() == pytest.approx(expected)
    empty = table.iloc[1]
    assert math.isfinite(empty["DAPI_noise"]) and math.isnan(empty["nucleus_area"])
    [bad] = table.attrs["unreadable"]
    assert (bad["sample"], bad["field"]) == ("S2", "f000") and "TIFF" in bad["reason"]
    # default: the manifest's fields only
    assert len(field_feature_table(tmp_path, manifest, crops, CHANNELS)) == 1


# --- reference and score --------------------------------------------------------------------------


def test_same_site_fields_pass_and_a_second_scanner_is_flagged(site):
    table, reference = site
    assert reference.n_fields == 40 and reference.features == feature_names(CHANNELS)
    fresh = pd.DataFrame([features_of(site_field(seed)) for seed in range(100, 110)], index=range(10, 20))
    scored = reference.score(fresh)
    assert list(scored.index) == list(range(10, 20))
    assert list(scored.columns) == ["drift_score", "drift_flag", "drift_reason", "drift_kind"]
    assert scored["drift_flag"].sum() <= 1
    assert (scored["drift_reason"][~scored["drift_flag"]] == "").all()
    assert (scored["drift_kind"][~scored["drift_flag"]] == "").all()
    shifted = reference.score(pd.DataFrame([features_of(second_scanner(site_field(100), seed=1))]))
    assert bool(shifted["drift_flag"].iloc[0]) and shifted["drift_kind"].iloc[0] == IMAGING
    assert shifted["drift_score"].iloc[0] > 5 * scored["drift_score"].max()
    first = shifted["drift_reason"].iloc[0].split(",")[0].split(" z=")[0]
    assert first in IMAGE_FEATURES


def test_a_field_of_unusual_cells_is_told_apart_from_an_unusual_scanner(site):
    _, reference = site
    # the same image and crops, but nuclei twice as large and CD45-negative: a CTC-dominated field
    usual = features_of(site_field(101))
    unusual_cells = usual | {"nucleus_area": 2.5 * usual["nucleus_area"], "cd45_score": -5.0}
    scored = reference.score(pd.DataFrame([usual, unusual_cells]))
    assert scored["drift_flag"].tolist() == [False, True]
    assert scored["drift_kind"].tolist() == ["", CELLS]
    assert scored["drift_reason"].iloc[1].split(" z=")[0] in ("nucleus_area", "cd45_score")
    summary = drift_summary(
        pd.concat(
            [scored, reference.score(pd.DataFrame([features_of(second_scanner(site_field(102), seed=2))]))]
        )
    )
    assert (summary["fields_flagged_cells"], summary["fields_flagged_imaging"]) == (1.0, 1.0)


def test_threshold_is_out_of_fold_not_in_sample(site):
    table, reference = site
    in_sample = reference.score(table)["drift_score"]
    assert reference.threshold > np.quantile(in_sample, reference.quantile)
    assert reference.quantile == 0.99


def test_scores_are_invariant_to_affine_maps_of_a_feature():
    reference_rows, query = gaussian_table(60, seed=0), gaussian_table(8, seed=1) * 1.5
    before = fit_reference(reference_rows)
    mapped = {"b": (250.0, 7.0), "d": (-3.5, 1e4)}
    moved_rows, moved_query = reference_rows.copy(), query.copy()
    for column, (a, b) in mapped.items():
        moved_rows[column] = a * moved_rows[column] + b
        moved_query[column] = a * moved_query[column] + b
    after = fit_reference(moved_rows)
    np.testing.assert_allclose(
        after.score(moved_query)["drift_score"], before.score(query)["drift_score"], rtol=1e-9
    )
    assert after.threshold == pytest.approx(before.threshold, rel=1e-9)


def test_score_is_the_ledoit_wolf_mahalanobis_distance():
    from sklearn.covariance import LedoitWolf

    rows, query = gaussian_table(50, seed=2), gaussian_table(5, seed=3)
    reference = fit_reference(rows)
    z = (rows.to_numpy() - reference.center) / reference.scale
    squared = LedoitWolf().fit(z).mahalanobis((query.to_numpy() - reference.center) / reference.scale)
    np.testing.assert_allclose(reference.score(query)["drift_score"], np.sqrt(squared), rtol=1e-9)


def test_a_missing_feature_adds_nothing_and_is_named_when_flagged():
    rows = gaussian_table(50, seed=4)
    reference = fit_reference(rows)
    at_location = np.asarray(reference.center) + np.asarray(reference.scale) * np.asarray(reference.location)
    query = pd.DataFrame([rows.iloc[0].to_numpy(), rows.iloc[0].to_numpy()], columns=rows.columns)
    query.loc[0, "c"] = np.nan
    query.loc[1, "c"] = at_location[2]
    scores = reference.score(query)["drift_score"]
    assert scores[0] == pytest.approx(scores[1], rel=1e-12)
    far = query.iloc[[0]].copy()
    far["a"] = reference.center[0] + 40 * reference.scale[0]
    scored = reference.score(far)
    assert bool(scored["drift_flag"].iloc[0])
    assert scored["drift_reason"].iloc[0].startswith("a z=+")
    assert scored["drift_reason"].iloc[0].endswith("; missing: c")


def test_json_round_trip_gives_identical_scores(site):
    table, reference = site
    stored = json.dumps(reference.model_dump(mode="json"))
    restored = DriftReference.model_validate(json.loads(stored))
    assert restored == reference
    pd.testing.assert_frame_equal(restored.score(table), reference.score(table))
    with pytest.raises(ValueError, match="features"):
        DriftReference.model_validate(json.loads(stored) | {"center": [0.0]})


def test_too_few_complete_fields_is_an_error_naming_the_count():
    rows = gaussian_table(6, seed=5)
    rows.loc[[1, 4], "a"] = np.nan
    with pytest.raises(ValueError, match="at least 5 complete fields .* got 4 of 6"):
        fit_reference(rows)
    with pytest.raises(ValueError, match="at least 8 complete fields"):
        fit_reference(gaussian_table(7, seed=5), folds=8)


def test_sample_columns_are_not_features():
    rows = gaussian_table(30, seed=6).assign(sample="S1", field=[f"f{i:03d}" for i in range(30)])
    assert fit_reference(rows).features == ["a", "b", "c", "d", "e"]


# --- per sample and summary -----------------------------------------------------------------------


def test_sample_drift_aggregates_fields():
    scored = pd.DataFrame(
        {
            "sample": ["B", "A", "B", "A", "A", "C"],
            "field": ["f0", "f0", "f1", "f1", "f2", "f0"],
            "drift_score": [2.0, 1.0, 9.0, 3.0, 8.0, 6.5],
            "drift_flag": [False, False, True, False, True, True],
        }
    )
    table = sample_drift(scored, threshold=5.0)
    assert table.to_dict("list") == {
        "sample": ["A", "B", "C"],
        "fields": [3, 2, 1],
        "fields_flagged": [1, 1, 1],
        "drift_score": [4.0, 5.5, 6.5],
        "drift_flag": [False, True, True],
    }
    with pytest.raises(ValueError, match="sample"):
        sample_drift(scored.drop(columns="sample"), 5.0)


def test_drift_summary():
    scored = pd.DataFrame(
        {
            "drift_score": [1.0, 2.0, 9.0, 4.0],
            "drift_flag": [False, False, True, False],
            "drift_kind": ["", "", CELLS, ""],
        }
    )
    assert drift_summary(scored) == {
        "fields": 4.0,
        "fields_flagged": 1.0,
        "fields_flagged_imaging": 0.0,
        "fields_flagged_cells": 1.0,
        "share_flagged": 0.25,
        "median_score": 3.0,
    }
    empty = drift_summary(scored.iloc[:0])
    assert empty["fields"] == 0.0 and math.isnan(empty["share_flagged"]) and math.isnan(empty["median_score"])
