"""The segment stage end to end on a tiny raw folder: bad fields quarantined, good ones cropped,
every row given its sample's site and its field's intensity levels."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.config.loader import parse_params
from ctcid.contracts import BACKGROUND_COLUMNS, DEFAULT_SITE, MANIFEST_SCHEMA, SCALE_COLUMNS, SITES_FILE
from ctcid.errors import CtcidError, GateFailed
from ctcid.intensity import estimate_levels
from ctcid.quarantine import read_quarantine
from ctcid.raw.fields import FieldRef, write_field
from ctcid.raw.sites import write_sites
from ctcid.segmentation.analysis import process_field
from ctcid.segmentation.stage import run_segment
from factory import DrawnCell, draw_field, make_annotations

CHANNELS = ["DAPI", "CEP8", "CD45"]
SIZE = 96
CELLS = [
    DrawnCell(24, 24, 7, spots=[(-3, 0), (3, 0)], cd45=True),  # leukocyte
    DrawnCell(70, 30, 11, spots=[(-4, -2), (4, -2), (0, 4)]),  # CTC
    DrawnCell(40, 72, 9, spots=[(-3, 0), (3, 0)]),  # CD45-negative diploid
]
TYPES = ["leukocyte", "ctc", "diploid_cd45neg"]  # annotated truth; copies and CD45 as drawn


def params(max_share: float = 0.5, **segment):
    segment = {"workers": 1, "crop_size": 24, "quarantine_max_share": max_share, **segment}
    return parse_params({"segment": segment})


def write_annotations(path: Path, sample: str, field: str) -> None:
    make_annotations(cells=CELLS, sample=sample, field=field, cell_type=TYPES).to_csv(path, index=False)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Two good samples (one annotated) and one sample of four bad fields, one of each kind."""
    root = tmp_path / "raw"
    good = draw_field(CELLS, size=SIZE)
    write_field(root / "A" / "f000.tif", good, CHANNELS)
    write_field(root / "A" / "f001.tif", draw_field(CELLS[:1], size=SIZE, seed=1), CHANNELS)
    write_annotations(root / "A" / "annotations.csv", "A", "f000")
    write_field(root / "B" / "f000.tif", draw_field(CELLS[1:], size=SIZE, seed=2), CHANNELS)
    write_field(root / "B" / "f001.tif", draw_field([], size=SIZE, seed=3), CHANNELS)  # empty, not an error

    bad = root / "C"
    bad.mkdir(parents=True)
    (bad / "corrupt.tif").write_bytes(b"not a TIFF, a failed transfer " * 40)
    tifffile.imwrite(bad / "two_channels.tif", good[:2])
    write_field(bad / "dark.tif", np.full_like(good, 100), CHANNELS)
    saturated = good.copy()
    saturated[2, : SIZE // 2] = 65535
    write_field(bad / "saturated.tif", saturated, CHANNELS)
    return root


def reasons(reports: Path) -> dict[str, str]:
    return {Path(e.path).name: e.reason for e in read_quarantine(reports / "quarantine.csv")}


def test_bad_fields_are_quarantined_and_good_ones_cropped(raw: Path, tmp_path: Path):
    out, reports = tmp_path / "segment", tmp_path / "reports"
    summary = run_segment(raw, out, reports, (p := params()).segment, p.channels, show_progress=False)

    found = reasons(reports)
    assert set(found) == {"corrupt.tif", "two_channels.tif", "dark.tif", "saturated.tif"}
    assert "cannot be decoded" in found["corrupt.tif"]
    assert "2 channels" in found["two_channels.tif"]
    assert "dark" in found["dark.tif"]
    assert "CD45 channel saturated" in found["saturated.tif"]
    assert all(e.stage == "segment" and e.hint for e in read_quarantine(reports / "quarantine.csv"))

    manifest = pd.read_parquet(out / "manifest.parquet")
    crops = np.load(out / "crops.npy", mmap_mode="r")
    assert summary.n_cells == len(manifest) == len(crops) == 6
    assert crops.shape[1:] == (3, 24, 24) and crops.dtype == np.uint16
    assert set(manifest["sample"]) == {"A", "B"}
    metrics = json.loads((reports / "segmentation.json").read_text())
    assert metrics["fields"] == 8 and metrics["fields_quarantined"] == 4 and metrics["fields_empty"] == 1
    assert (reports / "segmentation_overlay.png").stat().st_size > 0
    assert (reports / "crop_gallery.png").stat().st_size > 0


def test_manifest_follows_the_contract(raw: Path, tmp_path: Path):
    out, reports = tmp_path / "segment", tmp_path / "reports"
    run_segment(raw, out, reports, (p := params()).segment, p.channels, show_progress=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == list(MANIFEST_SCHEMA)
    for column, dtype in MANIFEST_SCHEMA.items():
        assert manifest[column].dtype == dtype, column
    assert manifest["crop_index"].tolist() == list(range(len(manifest)))
    assert manifest["cell_uid"].is_unique
    keys = list(zip(manifest["sample"], manifest["field"], manifest["cell_idx"], strict=True))
    assert keys == sorted(keys)
    assert manifest["cell_uid"].iloc[0] == "A/f000/0"

    crops = np.load(out / "crops.npy")
    image = draw_field(CELLS, size=SIZE)
    first = manifest.iloc[0]
    top, left = round(float(first["y"])) - 12, round(float(first["x"])) - 12
    inside = crops[0][:, max(0, -top) :, max(0, -left) :]
    assert (inside == image[:, max(top, 0) : top + 24, max(left, 0) : left + 24]).all()

    annotated = manifest[(manifest["sample"] == "A") & (manifest["field"] == "f000")]
    assert annotated["matched"].all() and annotated["true_label"].notna().all()
    assert annotated.sort_values("true_cell_id")["true_label"].tolist() == [0, 1, 0]
    ctc = annotated[annotated["true_cell_type"] == "ctc"].iloc[0]
    assert ctc["rule_label"] == 1 and ctc["cep8_spots"] == 3
    others = manifest[~((manifest["sample"] == "A") & (manifest["field"] == "f000"))]
    assert not others["matched"].any() and others["true_label"].isna().all()

    metrics = json.loads((reports / "segmentation.json").read_text())
    assert metrics["detection_recall"] == 1.0 and metrics["spot_count_exact"] == 1.0
    assert metrics["rule_sensitivity"] == 1.0 and metrics["rule_specificity"] == 1.0


def test_too_many_bad_fields_fail_the_stage_after_writing_the_quarantine_list(raw: Path, tmp_path: Path):
    out, reports = tmp_path / "segment", tmp_path / "reports"
    with pytest.raises(GateFailed, match=r"4 of 8 fields \(50.0%\).*quarantine_max_share 20.0%"):
        run_segment(raw, out, reports, (p := params(max_share=0.2)).segment, p.channels, show_progress=False)
    assert len(reasons(reports)) == 4
    assert not (out / "manifest.parquet").exists()


def test_cli_runs_the_stage_and_reports_a_failed_gate(raw: Path, tmp_path: Path):
    config = tmp_path / "params.yaml"
    config.write_text("segment: {workers: 1, crop_size: 24, quarantine_max_share: 0.5}\n")
    args = ["segment", "--raw", str(raw), "--out", str(tmp_path / "seg"), "--reports", str(tmp_path / "rep"),
            "--params", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "seg" / "crops.npy").exists()

    config.write_text("segment: {workers: 1, crop_size: 24, quarantine_max_share: 0.1}\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "quarantine_max_share" in result.output


def test_rows_carry_their_fields_levels_and_their_samples_site(raw: Path, tmp_path: Path):
    write_sites(raw, {"A": "lab-2", "Z": "site9"})  # B is not listed; Z has no fields
    out, reports = tmp_path / "segment", tmp_path / "reports"
    run_segment(raw, out, reports, (p := params()).segment, p.channels, show_progress=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    crops = np.load(out / "crops.npy")

    assert manifest.groupby("sample")["site"].unique().map(list).to_dict() == {
        "A": ["lab-2"],
        "B": [DEFAULT_SITE],
    }
    levels = manifest[list(BACKGROUND_COLUMNS + SCALE_COLUMNS)]
    assert np.isfinite(levels.to_numpy()).all() and (manifest[list(SCALE_COLUMNS)] > 0).all().all()
    assert (manifest.groupby(["sample", "field"])[levels.columns].nunique() == 1).all().all()
    # each field's levels are what ctcid.intensity finds in that field's crops alone
    for _, rows in manifest.groupby(["sample", "field"]):
        background, scale = estimate_levels(crops[rows["crop_index"].to_numpy()])
        np.testing.assert_array_equal(rows[list(BACKGROUND_COLUMNS)].iloc[0], background)
        np.testing.assert_array_equal(rows[list(SCALE_COLUMNS)].iloc[0], scale)


def test_without_a_sites_file_every_sample_is_at_the_default_site(raw: Path, tmp_path: Path):
    out = tmp_path / "segment"
    run_segment(raw, out, tmp_path / "reports", (p := params()).segment, p.channels, show_progress=False)
    assert set(pd.read_parquet(out / "manifest.parquet")["site"]) == {DEFAULT_SITE}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sample,microscope\nA,lab-2\n", "columns must be 'sample,site'"),
        ("sample,site\nA,lab 2\n", "site names must be"),
        ("sample,site\nA,lab-2\nA,lab-3\n", "samples listed twice"),
    ],
)
def test_a_malformed_sites_file_stops_the_stage_before_any_field(raw: Path, tmp_path: Path, text, message):
    (raw / SITES_FILE).write_text(text)
    out, reports = tmp_path / "segment", tmp_path / "reports"
    with pytest.raises(CtcidError, match=rf"{SITES_FILE}: {message}"):
        run_segment(raw, out, reports, (p := params()).segment, p.channels, show_progress=False)
    assert not (reports / "quarantine.csv").exists() and not out.exists()


def _saturated(good: np.ndarray, rows: int) -> np.ndarray:
    field = good.copy()
    field[0, :rows] = 65535  # DAPI clipped over the top rows
    return field


def _dark(good: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).integers(0, 20, size=good.shape)
    return (100 + noise).astype(np.uint16)  # a working camera, no light: a few counts of noise


@pytest.mark.parametrize(
    ("make", "reason", "hint"),
    [
        (lambda good: np.full_like(good, 65535), "DAPI channel saturated: 100.0% of pixels", "Shorten"),
        (lambda good: _saturated(good, SIZE * 3 // 4), "DAPI channel saturated: 75.0% of pixels", "Shorten"),
        (lambda good: np.full_like(good, 100), "DAPI channel is dark: 0.1-99.9 percentile range 0", "lamp"),
        (_dark, "DAPI channel is dark", "lamp"),
    ],
    ids=["all at full scale", "mostly at full scale", "flat dark", "dark with camera noise"],
)
def test_a_saturated_field_is_quarantined_as_saturated_and_a_dark_one_as_dark(
    tmp_path: Path, make, reason: str, hint: str
):
    path = tmp_path / "C" / "f000.tif"
    write_field(path, make(draw_field(CELLS, size=SIZE)), CHANNELS)
    p = params()
    outcome = process_field(FieldRef("C", "f000", path), p.segment, p.channels)
    assert outcome.table is None and outcome.problem is not None
    assert outcome.problem.path == str(path) and outcome.problem.reason.startswith(reason)
    assert hint in outcome.problem.hint
    other = "dark" if "saturated" in reason else "saturated"
    assert other not in outcome.problem.reason
