"""The contract readers: missing, damaged or wrong files give one clear message naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctcid.contracts import MATCHED_ANNOTATION_COLUMNS, open_crops, read_annotations, read_manifest
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


def test_missing_crops_name_the_step_that_writes_them(tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match=r"crops.npy: no crops file; run 'ctcid segment'"):
        open_crops(tmp_path / "crops.npy")


def test_crops_of_the_wrong_shape_are_refused_unless_the_gate_asks(tmp_path: Path) -> None:
    path = tmp_path / "crops.npy"
    np.save(path, np.zeros((4, 3, 8, 6), dtype=np.uint16))
    with pytest.raises(CtcidError, match=r"crops must be N x C x S x S, got shape \(4, 3, 8, 6\)"):
        open_crops(path)
    assert open_crops(path, check_shape=False).shape == (4, 3, 8, 6)  # the gate reports it itself


def test_annotations_without_a_needed_column_name_it(tmp_path: Path) -> None:
    path = tmp_path / "annotations.csv"
    path.write_text(",".join(c for c in MATCHED_ANNOTATION_COLUMNS if c != "label") + "\n")
    with pytest.raises(CtcidError, match=r"annotations.csv: annotations lack column\(s\) label"):
        read_annotations(path)


def test_unreadable_annotations_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match=r"annotations.csv: cannot read annotations"):
        read_annotations(tmp_path / "annotations.csv")
