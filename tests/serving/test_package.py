"""The serving commands' errors and the offline twin: clear messages, nothing half-done."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from service_support import Packaged

pytestmark = pytest.mark.service


def test_package_names_a_missing_model(packaged: Packaged, tmp_path: Path) -> None:
    done = packaged.ctcid("package", "--model-name", "no-such-model", "--reports", str(tmp_path))
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # rich wraps at the terminal's width, wherever the path ends
    assert "no registered model 'no-such-model'" in said and "ctcid register" in said
    assert not (tmp_path / "package.json").exists()


def test_serve_and_predict_say_when_nothing_is_packaged(packaged: Packaged, tmp_path: Path) -> None:
    empty = replace(packaged, home=tmp_path / "empty-store")
    for command in (["serve"], ["predict", str(packaged.field(0, 0))]):
        done = empty.ctcid(*command)
        assert done.returncode == 1, command
        assert "no Bento of 'ctcid-classifier'" in done.stderr and "ctcid package" in done.stderr


def test_predict_skips_a_bad_field_and_writes_the_rest(packaged: Packaged, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff" * 100)
    out = tmp_path / "out"
    fields = [str(packaged.field(1, 0)), str(junk)]
    done = packaged.ctcid("predict", *fields, "--sample", "P1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    answer = json.loads((out / "P1.json").read_text())
    assert (answer["fields_sent"], answer["fields_used"]) == (2, 1)
    assert answer["problems"][0]["field"] == "junk.tif" and answer["problems"][0]["status"] == 415
    assert "skipped junk.tif" in done.stderr
    assert (out / "f000_overlay.png").is_file() and (out / "P1_cells.csv").is_file()


def test_package_says_when_there_is_no_champion(packaged: Packaged, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = packaged.params.mlflow.tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("no-champion-yet")
    done = packaged.ctcid("package", "--model-name", "no-champion-yet", "--reports", str(tmp_path))
    assert done.returncode == 1
    assert "'no-champion-yet' has no champion version; run 'ctcid promote'" in done.stderr
