"""The README's hard-cohort recipe after a default run: make run's raw-data step re-simulates, and
`dvc repro` re-segments the hard cohort with the hard settings (docs/data.md#provenance)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import ROOT, copy_project, run, run_failing


def said_by(done: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, stdout and stderr, as one line however rich wrapped it."""
    return " ".join((done.stdout + done.stderr).split())


def locked(repo: Path, key: str) -> Any:
    """A param of segment as dvc.lock recorded it, listed as a key or inside a whole section."""
    values = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["segment"]["params"]["params.yaml"]
    for listed, value in values.items():
        if key == listed:
            return value
        if key.startswith(f"{listed}."):
            for part in key.removeprefix(f"{listed}.").split("."):
                value = value[part]
            return value
    raise KeyError(key)


@pytest.fixture(scope="module")
def hard(pristine_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(pristine_project, tmp_path_factory.mktemp("hard") / "project")
    hard_yaml = str(ROOT / "configs" / "hard.yaml")
    overlay = run(repo, "ctcid", "show-params", "-p", "params.yaml", "--over", hard_yaml)
    (repo / "params.yaml").write_text(overlay.stdout)
    return repo


def test_the_hard_overlay_after_a_default_run_gives_the_hard_cohort(hard: Path) -> None:
    # dvc repro alone no longer segments the default cohort with the hard settings
    output = " ".join(run_failing(hard, "dvc", "repro", "segment").split())  # as one line, however wrapped
    assert "simulate.artefacts.clumps_mean: 0.0 -> 1.5" in output and "make run" in output
    assert not (hard / "data/raw/S0000/artefacts.csv").exists()

    # then make run's raw-data step gives the hard cohort, and segment re-runs on it
    before = yaml.safe_load((hard / "data/raw.dvc").read_text())["outs"][0]["md5"]
    said = said_by(run(hard, "bash", "scripts/raw_data.sh"))
    assert "re-simulated data/raw" in said and "simulate.artefacts.clumps_mean: 0.0 -> 1.5" in said
    assert yaml.safe_load((hard / "data/raw.dvc").read_text())["outs"][0]["md5"] != before
    samples = sorted(p for p in (hard / "data/raw").iterdir() if p.is_dir())
    assert samples and all((sample / "artefacts.csv").is_file() for sample in samples)

    run(hard, "dvc", "repro", "segment")
    assert locked(hard, "segment.background_radius") == 25 and locked(hard, "segment.spot_mass_sigma") == 2.0
    assert locked(hard, "simulate.artefacts.clumps_mean") == 1.5
    assert "segment" not in run(hard, "dvc", "status", "segment").stdout

    again = said_by(run(hard, "bash", "scripts/raw_data.sh"))  # a second make run re-simulates nothing
    assert "is current" in again
    assert "segment" not in run(hard, "dvc", "status", "segment").stdout
