"""Ingest: a lab's own files land in the raw contract; each kind of bad file is quarantined, not fatal."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.errors import CtcidError
from ctcid.quarantine import QuarantineEntry, read_quarantine, write_quarantine
from ctcid.raw.fields import read_field
from ctcid.raw.ingest import ingest, parse_channel_map, safe_field_id
from ctcid.raw.sites import read_sites, write_sites
from factory import make_annotations

CHANNELS = ["DAPI", "CEP8", "CD45"]
runner = CliRunner()


def pixels(seed: int, shape: tuple[int, ...] = (3, 20, 24), dtype: type = np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 4000, shape).astype(dtype)


def reasons(quarantine: Path) -> dict[str, str]:
    return {Path(e.path).name: e.reason for e in read_quarantine(quarantine) if e.stage == "ingest"}


@pytest.fixture
def lab_folder(tmp_path: Path) -> Path:
    """One sample's export: good multi-channel and per-channel fields, and one of every bad kind."""
    src = tmp_path / "patient 7"
    src.mkdir()
    tifffile.imwrite(src / "field1.tif", pixels(1))  # C x H x W, 16-bit
    tifffile.imwrite(src / "field2.tif", np.moveaxis(pixels(2, dtype=np.uint8), 0, -1))  # H x W x C, 8-bit
    # OME-TIFF naming its channels in another order: reordered to params.channels
    tifffile.imwrite(
        src / "field3.ome.tif",
        pixels(3)[[2, 0, 1]],
        ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": ["CD45", "DAPI", "CEP8"]}},
    )
    for name, plane in zip(CHANNELS, pixels(4), strict=True):  # per-channel TIFFs
        tifffile.imwrite(src / f"pos4_{name.lower()}.tif", plane)
    for name, plane in zip(CHANNELS, pixels(5), strict=True):  # per-channel 16-bit PNGs
        cv2.imwrite(str(src / f"pos5_{name.lower()}.png"), plane)

    (src / "corrupt.tif").write_bytes(b"II*\x00 this is not really a TIFF")
    tifffile.imwrite(src / "two_channels.tif", pixels(6, shape=(2, 20, 24)))
    tifffile.imwrite(src / "float.tif", pixels(7).astype(np.float32))
    for name, plane in zip(CHANNELS, pixels(8), strict=True):  # CD45 from another frame size
        tifffile.imwrite(src / f"pos8_{name.lower()}.tif", plane if name != "CD45" else plane[:10])
    for name, plane in zip(CHANNELS[:2], pixels(9)[:2], strict=True):  # no CD45 file at all
        tifffile.imwrite(src / f"pos9_{name.lower()}.tif", plane)
    (src / "notes.txt").write_text("ignored: not an image")
    return src


def test_good_files_land_and_every_bad_file_is_quarantined(lab_folder: Path, tmp_path: Path) -> None:
    out, quarantine = tmp_path / "raw", tmp_path / "reports" / "quarantine.csv"
    result = ingest(lab_folder, out, CHANNELS, quarantine=quarantine)

    sample = out / "patient_7"
    assert sorted(p.name for p in sample.iterdir()) == [
        "field1.tif",
        "field2.tif",
        "field3.tif",
        "pos4.tif",
        "pos5.tif",
    ]
    assert len(result.written) == 5
    np.testing.assert_array_equal(read_field(sample / "field1.tif"), pixels(1))
    np.testing.assert_array_equal(
        read_field(sample / "field2.tif"), pixels(2, dtype=np.uint8).astype(np.uint16) * 257
    )
    np.testing.assert_array_equal(read_field(sample / "field3.tif"), pixels(3))
    np.testing.assert_array_equal(read_field(sample / "pos4.tif"), pixels(4))
    np.testing.assert_array_equal(read_field(sample / "pos5.tif"), pixels(5))

    found = reasons(quarantine)
    assert "cannot be decoded as TIFF" in found["corrupt.tif"] or "no image data" in found["corrupt.tif"]
    assert "has 2 channels" in found["two_channels.tif"]
    assert "pixel type float32" in found["float.tif"]
    for name in ("pos8_dapi.tif", "pos8_cep8.tif", "pos8_cd45.tif"):
        assert "channel sizes differ" in found[name] and "CD45 10x24" in found[name]
    for name in ("pos9_dapi.tif", "pos9_cep8.tif"):
        assert "has no CD45" in found[name]
    assert len(found) == 8
    assert all(e.hint for e in read_quarantine(quarantine))


def test_png_problems_are_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "S1"
    src.mkdir()
    for name, plane in zip(CHANNELS, pixels(1, dtype=np.uint8), strict=True):
        cv2.imwrite(str(src / f"a_{name.lower()}.png"), plane)
    cv2.imwrite(str(src / "b_dapi.png"), np.zeros((20, 24, 3), np.uint8))  # a coloured view
    (src / "b_cep8.png").write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(src / "b_cd45.png"), pixels(2, shape=(20, 24), dtype=np.uint8))
    cv2.imwrite(str(src / "overview.png"), pixels(3, shape=(20, 24), dtype=np.uint8))
    result = ingest(src, tmp_path / "raw", CHANNELS, quarantine=tmp_path / "q.csv")
    assert [p.name for p in result.written] == ["a.tif"]
    np.testing.assert_array_equal(
        read_field(result.written[0]), pixels(1, dtype=np.uint8).astype(np.uint16) * 257
    )
    found = reasons(tmp_path / "q.csv")
    assert "colour image" in found["b_dapi.png"]
    assert "matches no channel pattern" in found["overview.png"]
    assert set(found) == {"b_dapi.png", "b_cep8.png", "b_cd45.png", "overview.png"}


def test_custom_channel_map_and_one_folder_per_sample(tmp_path: Path) -> None:
    src = tmp_path / "export"
    for sample in ("P1", "P2"):
        (src / sample).mkdir(parents=True)
        for index, plane in enumerate(pixels(len(sample), shape=(3, 8, 8))):
            tifffile.imwrite(src / sample / f"scan_01_w{index + 1}.TIF", plane)
    result = ingest(src, tmp_path / "raw", CHANNELS, channel_map="DAPI=*_w1.tif,CEP8=*_w2.tif,CD45=*_w3.tif")
    assert sorted(str(p.relative_to(tmp_path / "raw")) for p in result.written) == [
        "P1/scan_01.tif",
        "P2/scan_01.tif",
    ]
    assert result.quarantined == []
    with pytest.raises(CtcidError, match="--sample names a single sample"):
        ingest(src, tmp_path / "raw", CHANNELS, sample="P1")


def test_annotations_are_carried_over_when_they_follow_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "S9"
    src.mkdir()
    tifffile.imwrite(src / "f000.tif", pixels(1))
    make_annotations(1, sample="S9", x=5, y=5, cell_type="ctc").to_csv(src / "annotations.csv", index=False)
    ingest(src, tmp_path / "raw", CHANNELS)
    assert (tmp_path / "raw" / "S9" / "annotations.csv").read_text() == (src / "annotations.csv").read_text()

    (src / "annotations.csv").write_text("cell,label\n1,CTC\n")
    result = ingest(src, tmp_path / "raw2", CHANNELS)
    assert not (tmp_path / "raw2" / "S9" / "annotations.csv").exists()
    assert "lacks the annotation columns" in result.quarantined[0].reason


def test_sites_are_carried_over_for_the_ingested_samples_only(tmp_path: Path) -> None:
    src = tmp_path / "export"
    for sample in ("P1", "P 2", "P3"):
        (src / sample).mkdir(parents=True)
    tifffile.imwrite(src / "P1" / "f000.tif", pixels(1))
    tifffile.imwrite(src / "P 2" / "f000.tif", pixels(2))  # listed by its folder name, ingested as P_2
    (src / "P3" / "f000.tif").write_bytes(b"not a tiff")  # nothing ingested: not listed
    write_sites(src, {"P1": "lab-a", "P 2": "lab-b", "P3": "lab-a", "P4": "lab-c"})
    out = tmp_path / "raw"
    write_sites(out, {"P0": "lab-z"})  # an earlier batch's sample stays listed
    ingest(src, out, CHANNELS, quarantine=tmp_path / "q.csv")
    assert read_sites(out) == {"P0": "lab-z", "P1": "lab-a", "P_2": "lab-b"}

    (src / "sites.csv").write_text("sample,site\nP1,lab a\n")
    with pytest.raises(CtcidError, match=r"sites.csv: site names must be"):
        ingest(src, tmp_path / "raw2", CHANNELS)
    assert not (tmp_path / "raw2").exists()  # refused before anything was written


def test_other_stages_quarantine_entries_are_kept(tmp_path: Path) -> None:
    quarantine = tmp_path / "quarantine.csv"
    segment_entry = QuarantineEntry("data/raw/S0/f0.tif", "segment", "no nuclei found", "check focus")
    write_quarantine(quarantine, [segment_entry, QuarantineEntry("old.tif", "ingest", "stale")])
    src = tmp_path / "S1"
    src.mkdir()
    (src / "bad.tif").write_bytes(b"not a tiff")
    tifffile.imwrite(src / "good.tif", pixels(1))
    ingest(src, tmp_path / "raw", CHANNELS, quarantine=quarantine)
    entries = read_quarantine(quarantine)
    assert entries[0] == segment_entry
    assert [Path(e.path).name for e in entries[1:]] == ["bad.tif"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DAPI=*_a.tif,CEP8=*_b.tif", "params.channels"),
        ("DAPI*_a.tif,CEP8=*_b.tif,CD45=*_c.tif", "not CHANNEL=PATTERN"),
        ("DAPI=*_*.tif,CEP8=*_b.tif,CD45=*_c.tif", "more than one"),
    ],
)
def test_bad_channel_maps_are_refused(text: str, message: str) -> None:
    with pytest.raises(CtcidError, match=message):
        parse_channel_map(text, CHANNELS)


def test_field_ids_are_file_safe() -> None:
    assert safe_field_id("scan 01 (left).ome") == "scan_01_left"
    assert safe_field_id("f000") == "f000"


def test_cli_ingest_summary_and_exit_codes(lab_folder: Path, tmp_path: Path) -> None:
    quarantine = tmp_path / "q.csv"
    args = ["ingest", str(lab_folder), "--out", str(tmp_path / "raw"), "--quarantine", str(quarantine)]
    result = runner.invoke(app, [*args, "--sample", "P7"])
    assert result.exit_code == 0, result.output
    assert "ingested 5 fields from 1 sample(s)" in result.output and "8 files quarantined" in result.output
    assert (tmp_path / "raw" / "P7" / "pos5.tif").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.tif").write_bytes(b"garbage")
    result = runner.invoke(
        app, ["ingest", str(broken), "--out", str(tmp_path / "raw"), "--quarantine", str(quarantine)]
    )
    assert result.exit_code == 1
    assert "nothing could be ingested" in " ".join(result.output.split())
    assert list(reasons(quarantine)) == ["a.tif"]

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["ingest", str(empty), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 1 and "no .tif, .tiff or .png images" in " ".join(result.output.split())
