"""A cohort's re-imaged specimens (external.cohorts.<name>.repeatability): simulated beside the cohort,
segmented as it is, and read back with the cohort."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ctcid.config.base import ConfigError
from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.errors import CtcidError
from ctcid.external.cohort import COHORT_FILE, RepeatImages, load_cohort, prepare_cohort
from ctcid.paths import COHORT_RAW, COHORT_REPEATS, COHORT_REPORTS, COHORT_SEGMENT
from factory import written_pixels

REPEATED = {"seed": 11, "simulate": {"n_samples": 3}, "repeatability": {"specimens": 2, "images": 2}}


def tiny(**cohorts: dict) -> Params:
    """A few one-field samples of 160 px, as tests/external/test_stage.py prepares them."""
    return parse_params(
        {
            "seed": 3,
            "simulate": {
                "n_samples": 3,
                "fields_per_sample": [1, 1],
                "field_size": 160,
                "ctc_burden_mean": 4.0,
                "background_cells_mean": 24.0,
                "workers": 1,
            },
            "segment": {"crop_size": 24, "workers": 1},
            "external": {"cohorts": cohorts},
        }
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("external")
    prepare_cohort(tiny(rep=REPEATED), "rep", root / "rep", show_progress=False)
    return root / "rep"


def annotations(raw: Path, sample: str) -> pd.DataFrame:
    return pd.read_csv(raw / sample / "annotations.csv", dtype={"field": str, "cluster_id": str})


def test_the_first_specimens_are_reimaged_and_segmented_beside_the_cohort(prepared: Path) -> None:
    cohort = load_cohort(prepared)
    assert (cohort.info.repeat_specimens, cohort.info.repeat_images) == (2, 2)
    repeats = cohort.repeats
    assert repeats is not None and repeats is cohort.repeats  # read once
    assert repeats.raw_dir == prepared / COHORT_REPEATS / COHORT_RAW
    folders = sorted(p.name for p in repeats.raw_dir.iterdir() if p.is_dir())
    assert folders == ["rep-S0000-r1", "rep-S0001-r1"]
    for name in (COHORT_SEGMENT, COHORT_REPORTS):
        assert any((prepared / COHORT_REPEATS / name).iterdir())
    assert set(repeats.manifest["sample"]) == set(folders)
    assert len(repeats.manifest) == repeats.crops.shape[0] > 0
    assert repeats.crops.shape[1:] == cohort.crops.shape[1:]
    # the originals are the cohort's own first samples: the same annotated cells, only the name differs
    for folder in folders:
        original = repeats.specimen(folder)
        assert original in set(cohort.manifest["sample"])
        again, first = annotations(repeats.raw_dir, folder), annotations(cohort.raw_dir, original)
        assert len(again) == len(first) > 0
        pd.testing.assert_frame_equal(again.drop(columns="sample"), first.drop(columns="sample"))
        # segmented alike: about as many cells found in either image
        found_again = (repeats.manifest["sample"] == folder).sum()
        found_first = (cohort.manifest["sample"] == original).sum()
        assert abs(int(found_again) - int(found_first)) <= max(2, 0.15 * found_first)
    # the cohort itself is what it is without repeatability: sample k's pixels are its own
    plain = prepared.parent / "plain"
    prepare_cohort(tiny(rep={**REPEATED, "repeatability": None}), "rep", plain, show_progress=False)
    assert written_pixels(plain / COHORT_RAW) == written_pixels(cohort.raw_dir)
    assert load_cohort(plain).repeats is None and not (plain / COHORT_REPEATS).exists()


def test_a_sample_name_maps_to_its_specimen_and_image() -> None:
    assert RepeatImages.specimen("holdout-S0003-r2") == "holdout-S0003"
    assert RepeatImages.specimen("holdout-S0003") == "holdout-S0003"
    assert RepeatImages.specimen("S0012-r10") == "S0012"
    assert RepeatImages.specimen("lab-r1") == "lab-r1"  # no sample number: not a re-image
    assert (RepeatImages.image("holdout-S0003-r2"), RepeatImages.image("holdout-S0003")) == (2, 0)


def test_dropping_repeatability_leaves_no_stale_repeats(tmp_path: Path) -> None:
    small = {**REPEATED, "simulate": {"n_samples": 2}}
    prepare_cohort(tiny(rep=small), "rep", tmp_path, show_progress=False)
    assert (tmp_path / COHORT_REPEATS).is_dir()
    prepare_cohort(tiny(rep={**small, "repeatability": None}), "rep", tmp_path, show_progress=False)
    assert not (tmp_path / COHORT_REPEATS).exists() and load_cohort(tmp_path).repeats is None


def test_an_older_cohort_file_reads_as_one_without_repeats(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rep"
    shutil.copytree(prepared, copy, ignore=shutil.ignore_patterns(COHORT_RAW, COHORT_REPEATS))
    info = json.loads((copy / COHORT_FILE).read_text())
    for key in ("repeat_specimens", "repeat_images"):
        info.pop(key)
    (copy / COHORT_FILE).write_text(json.dumps(info))
    assert load_cohort(copy).repeats is None
    # a cohort.json that lists repeats nobody made says what to run
    info.update(repeat_specimens=2, repeat_images=2)
    (copy / COHORT_FILE).write_text(json.dumps(info))
    with pytest.raises(CtcidError, match=re.escape("ctcid external-cohort --cohort rep")):
        _ = load_cohort(copy).repeats


def test_a_lab_folder_cohort_cannot_be_reimaged(tmp_path: Path) -> None:
    lab = {"folder": str(tmp_path), "repeatability": {"specimens": 2, "images": 2}}
    with pytest.raises(ConfigError, match="repeatability applies to simulated cohorts only"):
        tiny(lab=lab)
