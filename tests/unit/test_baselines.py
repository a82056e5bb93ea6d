import numpy as np
import pandas as pd
import pytest

from ctcid.config.params import Params
from ctcid.config.split import SplitParams
from ctcid.contracts import FEATURE_COLUMNS
from ctcid.errors import CtcidError
from ctcid.evaluation.baselines import evaluate_baselines
from ctcid.metrics import binary_metrics
from ctcid.split import make_split
from factory import make_manifest


def separable_manifest(n_samples: int = 30, seed: int = 0) -> pd.DataFrame:
    """CTCs are larger, CD45-negative and carry >= 3 spots, with noise and a few rule errors."""
    rng = np.random.default_rng(seed)
    n = n_samples * 40
    label = (rng.random(n) < 0.15).astype(np.int8)
    area = np.where(label, rng.normal(350, 60, n), rng.normal(170, 40, n))
    spots = np.where(label, rng.integers(3, 7, n), rng.integers(1, 3, n)).astype(np.int16)
    cd45 = np.where(label, rng.normal(0.02, 0.05, n), rng.normal(0.5, 0.2, n))
    features = {
        "area": area,
        "perimeter": 2 * np.sqrt(np.pi * np.abs(area)) * rng.normal(1.05, 0.05, n),
        "circularity": rng.uniform(0.6, 1.0, n),
        "solidity": rng.uniform(0.85, 1.0, n),
        "dapi_mean": rng.normal(3000, 400, n),
        "dapi_integrated": area * 3000,
        "cd45_score": cd45,
        "cep8_spots": spots,
    }
    rule = (spots >= 3) & (cd45 < 0.15)
    flip = rng.random(n) < 0.05
    table = make_manifest(
        sample=np.repeat([f"S{i:02d}" for i in range(n_samples)], 40),
        true_label=label,
        rule_label=rule ^ flip,
        seed=seed,
        **features,
    )
    table.loc[3, "area"] = np.nan  # a missing feature must not break the GBM
    return table


def test_baselines_beat_chance_on_a_separable_manifest():
    table = separable_manifest()
    params = Params(split=SplitParams())
    split = make_split(table, params.split, params.seed)
    scores = evaluate_baselines(table, split.to_dict(), params.seed)
    assert set(scores) == {"rule", "gbm"}
    for y_true, y_score in scores.values():
        assert np.array_equal(y_true, table["true_label"].iloc[split.test].to_numpy(dtype=int))
        assert y_score.shape == y_true.shape
    assert binary_metrics(*scores["gbm"]).auc > 0.9
    rule = binary_metrics(*scores["rule"])
    assert rule.sensitivity > 0.8 and rule.specificity > 0.8


def test_baselines_are_seeded():
    table = separable_manifest(seed=2)
    params = Params()
    split = make_split(table, params.split, params.seed)
    one = evaluate_baselines(table, split, params.seed)["gbm"][1]
    two = evaluate_baselines(table, split, params.seed)["gbm"][1]
    assert np.array_equal(one, two)


def test_missing_feature_column_is_reported():
    table = separable_manifest().drop(columns=[FEATURE_COLUMNS[-1]])
    params = Params()
    split = make_split(table, params.split, params.seed)
    with pytest.raises(CtcidError, match="cep8_spots"):
        evaluate_baselines(table, split, params.seed)


def test_split_from_another_manifest_is_rejected():
    table = separable_manifest()
    params = Params()
    split = make_split(table, params.split, params.seed)
    with pytest.raises(CtcidError, match="re-run 'ctcid split'"):
        evaluate_baselines(table.iloc[:100], split, params.seed)
