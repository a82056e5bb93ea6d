"""The registry's own input checks, without a server: crops, run files, reports, too few probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctcid.errors import CtcidError
from ctcid.registry.behaviour import MIN_PROBES, check_cd45_ring_lowers_score, check_dihedral_invariance
from ctcid.registry.metadata import read_metrics
from ctcid.registry.pyfunc import as_crops
from ctcid.registry.register import training_run


def test_crops_as_json_lists_become_a_float_array() -> None:
    crops = as_crops(np.zeros((2, 3, 4, 4), dtype=np.uint16).tolist(), channels=3)
    assert crops.dtype == np.float32 and crops.shape == (2, 3, 4, 4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((2, 4, 4)), r"shape \(2, 4, 4\): expected N x 3 x S x S"),
        (np.zeros((2, 2, 4, 4)), r"shape \(2, 2, 4, 4\): expected N x 3"),
        (np.zeros((2, 3, 4, 5)), "square"),
        (np.full((1, 3, 4, 4), np.nan), "NaN or infinite"),
        ([[["a"]]], "must be numbers"),
    ],
)
def test_bad_crops_are_named_not_scored(values, message: str) -> None:
    with pytest.raises(CtcidError, match=message):
        as_crops(values, channels=3)


def test_a_missing_or_broken_run_file_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match="run.json: no training run recorded; run 'ctcid train'"):
        training_run(tmp_path / "run.json")
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(CtcidError, match="no training run recorded"):
        training_run(tmp_path / "run.json")


def test_a_missing_or_incomplete_evaluation_report_says_to_evaluate(tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match="metrics.json: no evaluation report .*run 'ctcid evaluate'"):
        read_metrics(tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text('{"models": {}}')
    with pytest.raises(CtcidError, match="no evaluation report"):
        read_metrics(tmp_path / "metrics.json")


def test_too_few_probes_are_reported_not_decided() -> None:
    few = np.zeros((MIN_PROBES - 1, 3, 8, 8), dtype=np.float32)
    score = lambda crops: np.zeros(len(crops))  # noqa: E731
    for outcome in (check_dihedral_invariance(score, few), check_cd45_ring_lowers_score(score, few, few)):
        assert outcome.passed is None and "not decided" in str(outcome)
