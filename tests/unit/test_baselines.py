import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ctcid.config.params import Params
from ctcid.config.split import SplitParams
from ctcid.contracts import FEATURE_COLUMNS
from ctcid.errors import CtcidError
from ctcid.evaluation.baselines import evaluate_baselines, feature_matrix, fit_gbm, fit_gbm_baseline
from ctcid.metrics import binary_metrics, threshold_for_sensitivity
from ctcid.model.count_threshold import count_threshold
from ctcid.split import Split, counting_threshold, make_split
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


# --- the GBM at its out-of-fold operating threshold ------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    # the GBM's OpenMP threads spin while they wait: on a shared 2-core machine a fit of a second
    # can take tens (tests/conftest.py sets OMP_NUM_THREADS only under pytest-xdist)
    with threadpool_limits(1):
        yield


def _fitted(seed: int = 0, target: float = 0.9, hard: bool = False):
    table = separable_manifest(seed=seed)
    if hard:  # a third of the cells get the features of a random other cell: the classes overlap
        rng = np.random.default_rng(seed)
        mixed = np.flatnonzero(rng.random(len(table)) < 0.33)
        for column in FEATURE_COLUMNS:
            table.loc[mixed, column] = table.loc[rng.permutation(mixed), column].to_numpy()
    split = make_split(table, SplitParams(by="sample", n_folds=3), seed=1)
    return table, split, fit_gbm_baseline(table, split, seed=5, target_sensitivity=target)


def _oof_rows(table: pd.DataFrame, split: Split) -> np.ndarray:
    labelled = table["true_label"].notna().to_numpy()
    return np.concatenate([fold.val_all[labelled[fold.val_all]] for fold in split.folds])


def test_the_gbm_threshold_reaches_the_target_sensitivity_on_its_own_out_of_fold_predictions():
    table, split, gbm = _fitted(target=0.9, hard=True)
    assert gbm.threshold == threshold_for_sensitivity(gbm.oof_true, gbm.oof_score, 0.9)
    reached = binary_metrics(gbm.oof_true, gbm.oof_score, gbm.threshold).sensitivity
    assert 0.9 <= reached < 1.0
    # the highest such threshold: the next positive score above it misses the target
    above = np.sort(gbm.oof_score[(gbm.oof_true == 1) & (gbm.oof_score > gbm.threshold)])
    assert above.size and binary_metrics(gbm.oof_true, gbm.oof_score, above[0]).sensitivity < 0.9
    stricter = fit_gbm_baseline(table, split, seed=5, target_sensitivity=0.99)
    assert stricter.threshold < gbm.threshold


def test_the_out_of_fold_rows_are_the_folds_labelled_validation_cells_never_the_test_cells():
    table, split, gbm = _fitted()
    rows = _oof_rows(table, split)
    assert not np.isin(rows, split.test).any()
    assert len(rows) == len(np.unique(rows)) == gbm.oof_true.size == gbm.oof_score.size
    np.testing.assert_array_equal(gbm.oof_true, table["true_label"].iloc[rows].to_numpy(dtype=int))
    # each fold's model, trained on its training patients' balanced cells, scores its validation cells
    expected = []
    for number, fold in enumerate(split.folds):
        y = table["true_label"].iloc[fold.train].to_numpy(dtype=np.int64)
        model = fit_gbm(feature_matrix(table, fold.train), y, 5 + number, split.class_weight_vector()[y])
        expected.append(model.predict_proba(feature_matrix(table, fold.val_all))[:, 1])
    np.testing.assert_allclose(gbm.oof_score, np.concatenate(expected))
    # its counting threshold: the fewest per-patient count errors on these same predictions
    patients = table["sample"].astype(str).to_numpy()[rows]
    np.testing.assert_array_equal(gbm.oof_patients, patients)
    oof = pd.DataFrame({"y_true": gbm.oof_true, "y_score": gbm.oof_score})
    assert gbm.counting == count_threshold(oof, patients).threshold != counting_threshold(split)

    # the test cells feed neither the out-of-fold predictions nor the threshold: scramble them
    scrambled = table.copy()
    test = split.test
    scrambled.loc[test, "true_label"] = 1 - scrambled.loc[test, "true_label"]
    scrambled.loc[test, "area"] = scrambled.loc[test, "area"].to_numpy()[::-1]
    scrambled.loc[test, "cd45_score"] = 5.0
    again = fit_gbm_baseline(scrambled, split, seed=5, target_sensitivity=0.9)
    np.testing.assert_array_equal(again.oof_score, gbm.oof_score)
    assert again.threshold == gbm.threshold


def test_unlabelled_validation_cells_are_left_out_of_the_out_of_fold_predictions():
    table, split, gbm = _fitted()
    table = table.copy()
    # make_split's folds hold labelled cells only: put an unlabelled one into a fold by hand
    unlabelled = int(split.test[0])
    table.loc[unlabelled, "true_label"] = pd.NA
    data = split.to_dict()
    data["test"] = [int(r) for r in split.test[1:]]
    data["folds"][0]["val_all"] = [*data["folds"][0]["val_all"], unlabelled]
    widened = Split.from_dict(data)
    again = fit_gbm_baseline(table, widened, seed=5, target_sensitivity=0.9)
    np.testing.assert_array_equal(again.oof_true, gbm.oof_true)
    np.testing.assert_allclose(again.oof_score, gbm.oof_score)


def test_the_gbm_scores_another_manifests_rows():
    _, _, gbm = _fitted()
    other = separable_manifest(n_samples=10, seed=8)
    rows = np.array([5, 0, 17, 3])
    scores = gbm.score(other, rows)
    expected = gbm.model.predict_proba(other.iloc[rows][list(FEATURE_COLUMNS)].to_numpy(dtype=float))[:, 1]
    np.testing.assert_allclose(scores, expected)
    every = gbm.score(other)
    assert every.shape == (len(other),)
    np.testing.assert_allclose(every[rows], scores)
    assert gbm.score(other, np.array([], dtype=np.int64)).shape == (0,)
    labels = other["true_label"].to_numpy(dtype=int)
    assert binary_metrics(labels, every).auc > 0.9  # it learned the cells, not the rows


def test_the_gbm_baseline_is_deterministic_for_a_seed():
    table, split, one = _fitted()
    two = fit_gbm_baseline(table, split, seed=5, target_sensitivity=0.9)
    assert one.threshold == two.threshold
    np.testing.assert_array_equal(one.oof_score, two.oof_score)
    np.testing.assert_array_equal(one.score(table), two.score(table))


def test_without_folds_the_gbm_keeps_one_half():
    table, split, _ = _fitted()
    data = split.to_dict()
    data["folds"] = []
    gbm = fit_gbm_baseline(table, Split.from_dict(data), seed=5, target_sensitivity=0.9)
    assert gbm.threshold == 0.5 and gbm.oof_true.size == 0 and gbm.oof_score.size == 0
