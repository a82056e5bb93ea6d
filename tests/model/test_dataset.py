"""Reading the segment stage's outputs: missing or damaged files give one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError


def test_a_missing_manifest_is_named_with_the_step_that_writes_it(tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match=r"manifest.parquet: manifest not found; run 'ctcid segment'"):
        read_manifest(tmp_path / "manifest.parquet")


def test_a_damaged_manifest_is_reported_not_raised_as_a_traceback(tmp_path: Path) -> None:
    damaged = tmp_path / "manifest.parquet"
    damaged.write_bytes(b"not parquet")
    with pytest.raises(CtcidError, match="cannot read the manifest"):
        read_manifest(damaged)


def test_damaged_crops_are_reported(tmp_path: Path) -> None:
    damaged = tmp_path / "crops.npy"
    damaged.write_bytes(b"not numpy")
    with pytest.raises(CtcidError, match="crops.npy: not a readable .npy array"):
        open_crops(damaged)
