"""Segmentation is reproducible: the same raw fields give byte-identical crops and manifest,
called twice in one process (the first call of a process used to differ), and in fresh
processes with one worker and with one worker per core, as `make run` uses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ctcid.config.loader import parse_params
from ctcid.raw.simulate import simulate_dataset
from ctcid.segmentation.stage import run_segment

OUTPUTS = ("crops.npy", "manifest.parquet")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Samples 20-22 of the default cohort: S0021/f000 is a field where cv2.distanceTransform's
    # last-bit noise once changed how touching nuclei were split from one call to the next.
    root = tmp_path_factory.mktemp("raw")
    simulate_dataset(parse_params({}), root, n_samples=3, first_sample=20, workers=1, show_progress=False)
    return root


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


def segment_here(raw: Path, out: Path) -> dict[str, str]:
    params = parse_params({"segment": {"workers": 1}})
    run_segment(raw, out, out / "reports", params.segment, params.channels, show_progress=False)
    return digests(out)


def segment_in_new_process(raw: Path, out: Path, params_file: Path) -> dict[str, str]:
    ctcid = Path(sys.executable).parent / "ctcid"
    command = [str(ctcid), "segment", "--raw", str(raw), "--out", str(out), "--reports", str(out / "reports"),
               "--params", str(params_file)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return digests(out)


def test_segment_twice_in_one_process_gives_the_same_bytes(raw: Path, tmp_path: Path) -> None:
    first = segment_here(raw, tmp_path / "first")
    assert segment_here(raw, tmp_path / "second") == first


@pytest.mark.parametrize("workers", [1, 0])
def test_segment_in_fresh_processes_gives_the_same_bytes(raw: Path, tmp_path: Path, workers: int) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"segment:\n  workers: {workers}\n")
    reference = segment_here(raw, tmp_path / "here")
    assert segment_in_new_process(raw, tmp_path / "a", params_file) == reference
    assert segment_in_new_process(raw, tmp_path / "b", params_file) == reference
