"""`ctcid retrain` outside a project: one message naming what is missing, exit status 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcid.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_retrain_outside_a_project_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # a DVC pipeline, but no DVC repository or raw data
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["retrain", "--no-pull", "--params", str(ROOT / "params.yaml")])
    message = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1, message
    assert "is not a ctcid project" in message
    assert "(missing: .dvc, data/raw.dvc)" in message
    assert "Traceback" not in message
    assert not (tmp_path / "reports").exists()  # no summary of a run that never started
