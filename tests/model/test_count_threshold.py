"""The counting threshold: fewest per-patient count errors on out-of-fold predictions, per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ctcid.metrics import threshold_for_sensitivity
from ctcid.model.backbones import build_classifier
from ctcid.model.count_threshold import SLACK_PER_PATIENT, count_threshold, model_count_threshold
from ctcid.model.dataset import Normalisation
from ctcid.model.predict import ModelInfo, load_model, save_model
from ctcid.split import Split

NORM = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _oof(y_true, y_score) -> pd.DataFrame:
    y_true = np.asarray(y_true)
    return pd.DataFrame({"crop_index": np.arange(y_true.size), "y_true": y_true, "y_score": y_score})


def _mae(oof: pd.DataFrame, patients: np.ndarray, threshold: float) -> float:
    """The per-patient count error at one threshold, the obvious way."""
    names, patient = np.unique(patients, return_inverse=True)
    true = np.bincount(patient, weights=oof["y_true"], minlength=names.size)
    counted = np.bincount(patient, weights=oof["y_score"] >= threshold, minlength=names.size)
    return float(np.abs(counted - true).mean())


def _cohort(seed: int, rounded: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Out-of-fold cells of 40 patients: a few per cent CTCs, scores that overlap."""
    rng = np.random.default_rng(seed)
    n = 1500
    patients = rng.choice([f"P{i:02d}" for i in range(40)], n)
    y_true = (rng.random(n) < rng.uniform(0.0, 0.08, 40)[np.searchsorted(np.unique(patients), patients)])
    scores = np.clip(np.where(y_true, rng.beta(6, 2, n), rng.beta(1.2, 6, n)), 0.0, 1.0)
    if rounded:  # many ties
        scores = np.round(scores, 2)
    return _oof(y_true.astype(np.int64), scores), patients


@pytest.mark.parametrize(("seed", "rounded"), [(0, False), (1, True), (2, False), (3, True)])
def test_the_chosen_threshold_has_the_least_count_error_of_a_fine_grid(seed: int, rounded: bool) -> None:
    oof, patients = _cohort(seed, rounded)
    choice = count_threshold(oof, patients)
    assert 0.0 < choice.threshold <= 1.0
    assert choice.n_patients == len(np.unique(patients))
    assert choice.mae == pytest.approx(_mae(oof, patients, choice.threshold))
    grid = np.linspace(0.0005, 1.0, 2000)
    assert min(_mae(oof, patients, t) for t in grid) >= choice.mae - SLACK_PER_PATIENT - 1e-12
    # every threshold that changes a count is a candidate: none of them does better by more either
    candidates = np.unique(oof["y_score"])
    best = min(_mae(oof, patients, t) for t in candidates[candidates > 0])
    assert best >= choice.mae - SLACK_PER_PATIENT - 1e-12
    assert choice.mae_at_half == pytest.approx(_mae(oof, patients, 0.5))


def test_a_wide_plateau_within_the_slack_beats_a_narrow_best_one() -> None:
    # 40 patients, one CTC each, scored 0.99 (a fusion model's rule-positive cluster); one patient
    # also has a CTC scored 0.002, just above near-certain negatives at 0.0019-0.00199: counting at
    # 0.002 is one error better in 40 patients (0.025 per patient), inside the slack, and a hair wide
    names = [f"P{i:02d}" for i in range(40)]
    y_true = [1] * 40 + [1] + [0] * 40
    scores = [0.99] * 40 + [0.002] + list(np.linspace(0.0019, 0.00199, 40))
    patients = np.array(names + ["P00"] + names)
    choice = count_threshold(_oof(y_true, scores), patients)
    assert 0.01 < choice.threshold < 0.99  # the gap between the clusters, not the tail
    assert choice.mae == pytest.approx(1 / 40)


def test_the_counting_threshold_fixes_the_over_count_of_the_sensitive_operating_threshold() -> None:
    rng = np.random.default_rng(7)
    # 60 patients of 400 cells, 2 % CTCs; a few CTCs score low, so 97 % sensitivity sits among leukocytes
    patients = np.repeat([f"P{i:02d}" for i in range(60)], 400)
    y_true = (rng.random(patients.size) < 0.02).astype(np.int64)
    scores = np.where(y_true == 1, rng.uniform(0.6, 1.0, patients.size), rng.beta(1.5, 8, patients.size))
    hard = np.flatnonzero(y_true == 1)[::12]
    scores[hard] = rng.uniform(0.2, 0.4, hard.size)
    oof = _oof(y_true, scores)
    operating = threshold_for_sensitivity(y_true, scores, 0.97)
    choice = count_threshold(oof, patients, operating=operating)
    assert choice.mae_at_operating == pytest.approx(_mae(oof, patients, operating))
    counted = pd.Series(scores >= operating).groupby(patients).sum()
    truth = pd.Series(y_true).groupby(patients).sum()
    assert (counted - truth).mean() > 2  # the operating threshold over-counts every patient
    assert choice.threshold > operating
    assert choice.mae < choice.mae_at_operating / 4
    assert choice.mae <= 1.0


def test_tied_thresholds_give_the_middle_of_the_widest_plateau() -> None:
    # (0.8, 1]: B and D missed (2); (0.5, 0.8]: D missed (1); (0, 0.5]: C over-counted (1)
    oof = _oof([1, 0, 1], [0.8, 0.5, 0.5])
    patients = np.array(["B", "C", "D"])
    choice = count_threshold(oof, patients)
    assert choice.threshold == pytest.approx(0.4)  # the middle of (0, 0.8], not of one of its parts
    assert choice.mae == pytest.approx(1 / 3)
    # one plateau: every threshold in (0.2, 0.8] is exact; its middle is chosen
    separated = count_threshold(_oof([0, 1, 1], [0.2, 0.8, 0.9]), np.array(["A", "A", "B"]))
    assert separated.threshold == pytest.approx(0.5) and separated.mae == 0.0
    # of two equally good plateaus, the wider: (0.7, 1] (C missed) beats (0, 0.4] (A over-counted)
    wider = count_threshold(_oof([0, 1], [0.7, 0.4]), np.array(["A", "C"]))
    assert wider.threshold == pytest.approx(0.2)


def test_the_threshold_never_leaves_zero_to_one() -> None:
    # counting nothing is best and the top score is 1: the least error reachable within (0, 1]
    at_one = count_threshold(_oof([0, 0], [1.0, 0.3]), np.array(["A", "A"]))
    assert 0.0 < at_one.threshold <= 1.0 and at_one.mae == 1.0
    nothing = count_threshold(_oof([0, 0], [0.6, 0.2]), np.array(["A", "B"]))
    assert nothing.threshold == pytest.approx(0.8) and nothing.mae == 0.0
    # every cell (scored 0 too) counted is best, but 0 is no threshold: the lowest positive plateau
    zeros = count_threshold(_oof([1, 1], [0.0, 0.4]), np.array(["A", "A"]))
    assert zeros.threshold == pytest.approx(0.2)
    empty = count_threshold(_oof(np.empty(0, dtype=np.int64), np.empty(0)), np.empty(0, dtype=str))
    assert empty.threshold == 0.5 and empty.n_patients == 0


def test_given_true_counts_include_patients_without_rows() -> None:
    oof = _oof([1, 0], [0.9, 0.1])
    choice = count_threshold(oof, np.array(["A", "A"]), true_counts={"A": 2, "B": 1})
    # counting both of A's cells is best; B, without rows, is missed at every threshold
    assert choice.n_patients == 2 and choice.mae == pytest.approx(0.5) and choice.mae_at_half == 1.0
    assert choice.threshold == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lacks patients"):
        count_threshold(oof, np.array(["A", "Z"]), true_counts={"A": 1})
    with pytest.raises(ValueError, match="patients for"):
        count_threshold(oof, np.array(["A"]))
    with pytest.raises(ValueError, match="probabilities"):
        count_threshold(_oof([1], [1.5]), np.array(["A"]))


def _info(**values: object) -> ModelInfo:
    return ModelInfo("resnet18", "scratch", 16, ("DAPI", "CEP8", "CD45"), NORM, 0.3, 0.97, 1, 0, **values)


def test_a_saved_model_keeps_its_counting_threshold(tmp_path: Path) -> None:
    model = build_classifier("resnet18", NORM, input_size=16)
    info = _info(count_threshold=0.93)
    loaded = load_model(save_model(tmp_path / "model.pt", model, info))
    assert loaded.info == info and loaded.info.count_threshold == 0.93


def test_a_model_saved_before_counting_thresholds_loads_without_one(tmp_path: Path) -> None:
    model = build_classifier("resnet18", NORM, input_size=16)
    path = save_model(tmp_path / "model.pt", model, _info(count_threshold=0.93))
    saved = torch.load(path, weights_only=True)
    del saved["metadata"]["count_threshold"]
    torch.save(saved, path)
    old = load_model(path).info
    assert old.count_threshold is None
    assert ModelInfo.from_dict({k: v for k, v in _info().to_dict().items() if k != "count_threshold"}) == old


def test_a_model_counts_at_its_own_threshold_else_the_splits() -> None:
    split = Split.from_dict(
        {"by": "sample", "label_source": "truth", "seed": 0, "train": [], "test": [], "train_balanced": [],
         "folds": [], "counts": {"train": {"ctc": 50, "non_ctc": 950}}}
    )
    assert model_count_threshold(_info(count_threshold=0.8), split) == 0.8
    assert model_count_threshold(_info(), split) == pytest.approx(0.95)  # prior-corrected
    assert model_count_threshold(_info(), 0.9) == 0.9
    assert model_count_threshold(object(), 0.9) == 0.9  # a served version that knows none


def test_the_registered_counting_threshold_is_the_selected_models_own() -> None:
    from ctcid.registry.metadata import counting_threshold

    report = {
        "selected": "resnet18",
        "test": {"count_threshold": 0.95},  # the split's prior-corrected one
        "models": {"resnet18": {"counting_threshold": 0.81}, "vgg16": {"counting_threshold": 0.7}},
    }
    assert counting_threshold(report, "resnet18", _info(count_threshold=0.8)) == 0.81  # as evaluated
    # reports written before models had their own: the model's, else the test summary's, else 0.5
    report["models"] = {"resnet18": {}}
    assert counting_threshold(report, "resnet18", _info(count_threshold=0.8)) == 0.8
    assert counting_threshold(report, "resnet18", _info()) == 0.95
    assert counting_threshold({"models": {}, "test": {}}, "resnet18") == 0.5
