"""The raw TIFF contract: what write_field writes, read_field gives back, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ctcid.errors import FieldReadError
from ctcid.raw.fields import FieldRef, iter_fields, read_field, write_field

CHANNELS = ["DAPI", "CEP8", "CD45"]


def field_image(seed: int = 0, shape: tuple[int, ...] = (3, 24, 32), dtype: type = np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def test_round_trip_keeps_pixels_and_names_the_channels(tmp_path: Path) -> None:
    image = field_image()
    path = tmp_path / "S0000" / "f000.tif"
    write_field(path, image, CHANNELS)
    back = read_field(path)
    assert back.dtype == np.uint16 and back.shape == image.shape
    np.testing.assert_array_equal(back, image)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        for name in CHANNELS:
            assert f'Name="{name}"' in tif.ome_metadata


def test_same_pixels_give_the_same_bytes(tmp_path: Path) -> None:
    write_field(tmp_path / "a.tif", field_image(), CHANNELS)
    write_field(tmp_path / "b.tif", field_image(), CHANNELS)
    write_field(tmp_path / "c.tif", field_image(seed=1), CHANNELS)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    assert (tmp_path / "a.tif").read_bytes() != (tmp_path / "c.tif").read_bytes()


def test_write_refuses_wrong_shape_or_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected 3 x H x W"):
        write_field(tmp_path / "x.tif", field_image(shape=(2, 8, 8)), CHANNELS)
    with pytest.raises(ValueError, match="16-bit"):
        write_field(tmp_path / "x.tif", field_image(dtype=np.uint8), CHANNELS)


def test_read_accepts_channels_last_and_8_bit(tmp_path: Path) -> None:
    image = field_image(dtype=np.uint8)
    tifffile.imwrite(tmp_path / "yxc.tif", np.moveaxis(image, 0, -1))
    back = read_field(tmp_path / "yxc.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image.astype(np.uint16) * 257)


def test_single_plane_reads_as_one_channel(tmp_path: Path) -> None:
    plane = field_image(shape=(10, 12))
    tifffile.imwrite(tmp_path / "plane.tif", plane)
    np.testing.assert_array_equal(read_field(tmp_path / "plane.tif", n_channels=1), plane[None])
    with pytest.raises(FieldReadError, match="has 1 channel, expected 3") as error:
        read_field(tmp_path / "plane.tif")
    assert "ctcid ingest" in error.value.hint


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (field_image(shape=(2, 8, 8)), "has 2 channels"),
        (field_image(shape=(3, 8, 8)).astype(np.float32), "pixel type float32"),
        (field_image(shape=(3, 8, 8)).astype(np.int16), "pixel type int16"),
        (field_image(shape=(2, 3, 8, 8)), "4 dimensions"),
    ],
)
def test_read_refuses_unusable_fields(tmp_path: Path, content: np.ndarray, reason: str) -> None:
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, content)
    with pytest.raises(FieldReadError, match=reason) as error:
        read_field(path)
    assert error.value.path == path


def test_read_reports_damaged_and_missing_files(tmp_path: Path) -> None:
    good = tmp_path / "good.tif"
    write_field(good, field_image(shape=(3, 64, 64)), CHANNELS)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:-3000])
    header_only = tmp_path / "header_only.tif"
    header_only.write_bytes(b"II*\x00" + b"\x17" * 64)
    not_tiff = tmp_path / "not_tiff.tif"
    not_tiff.write_bytes(b"hello, I am a text file")
    for path, reason in [
        (truncated, "cannot be decoded as TIFF"),
        (header_only, "holds no image data"),
        (not_tiff, "cannot be decoded as TIFF"),
    ]:
        with pytest.raises(FieldReadError, match=reason) as error:
            read_field(path)
        assert "Re-export" in error.value.hint
    with pytest.raises(FieldReadError, match="file not found"):
        read_field(tmp_path / "missing.tif")


def test_iter_fields_lists_tiffs_in_sorted_order(tmp_path: Path) -> None:
    for sample, field in [("S0001", "f000"), ("S0000", "f001"), ("S0000", "f000")]:
        write_field(tmp_path / sample / f"{field}.tif", field_image(shape=(3, 4, 4)), CHANNELS)
    (tmp_path / "S0000" / "annotations.csv").write_text("sample\n")
    assert list(iter_fields(tmp_path)) == [
        FieldRef("S0000", "f000", tmp_path / "S0000" / "f000.tif"),
        FieldRef("S0000", "f001", tmp_path / "S0000" / "f001.tif"),
        FieldRef("S0001", "f000", tmp_path / "S0001" / "f000.tif"),
    ]
