"""Non-CNN baselines scored on the same test rows as the CNNs.

* ``rule``: the paper's manual criterion as segmentation measures it (CD45-negative and
  ``cep8_spots >= 3``), i.e. the manifest's ``rule_label`` used as the score. With
  ``split.label_source: rule`` it is the label itself and trivially perfect.
* ``gbm``: gradient-boosted trees on the hand-made per-cell features, trained on the
  (balanced) training rows; tells whether a CNN earns its cost over classical features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from ctcid.contracts import FEATURE_COLUMNS, cell_labels
from ctcid.errors import CtcidError
from ctcid.metrics import threshold_for_sensitivity
from ctcid.model.count_threshold import count_threshold
from ctcid.paths import SPLIT_NAME
from ctcid.split import Split, counting_threshold

RULE = "rule"
GBM = "gbm"


def _columns(manifest: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise CtcidError(f"manifest lacks columns {missing} needed by the baselines; re-run 'ctcid segment'")


def feature_matrix(manifest: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """The hand-made features of ``rows`` as float64; NaN stays NaN (the GBM handles it)."""
    _columns(manifest, FEATURE_COLUMNS)
    return manifest.iloc[rows][list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)


def fit_gbm(
    features: np.ndarray, labels: np.ndarray, seed: int, sample_weight=None
) -> HistGradientBoostingClassifier:
    model = HistGradientBoostingClassifier(random_state=seed)
    return model.fit(features, labels, sample_weight=sample_weight)


@dataclass(frozen=True)
class GbmBaseline:
    """Gradient boosting on the hand-made features, with thresholds chosen as the CNNs' are.

    ``threshold`` reaches ``train.target_sensitivity`` on out-of-fold predictions (each fold's model
    scores every training cell of its validation patients), never on the test set; ``counting`` has
    the fewest per-patient count errors on the same out-of-fold predictions, as a CNN's
    (:func:`~ctcid.model.count_threshold.count_threshold`; the split's prior-corrected one without
    CTCs in them). :meth:`score` scores any manifest's rows: the test samples' every detection, or
    an external cohort's.
    """

    model: HistGradientBoostingClassifier
    threshold: float
    counting: float
    oof_true: np.ndarray
    oof_score: np.ndarray
    oof_patients: np.ndarray | None = None  # the patient of each out-of-fold row

    def score(self, manifest: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(len(manifest)) if rows is None else rows
        if rows.size == 0:
            return np.empty(0)
        return self.model.predict_proba(feature_matrix(manifest, rows))[:, 1]


def _checked(manifest: pd.DataFrame, split: Split | Mapping[str, Any]) -> tuple[Split, pd.Series]:
    if not isinstance(split, Split):
        split = Split.from_dict(split)
    _columns(manifest, ("rule_label", *FEATURE_COLUMNS))
    labels = cell_labels(manifest, split.label_source)
    train, test = split.train_balanced, split.test
    if max(train.max(initial=-1), test.max(initial=-1)) >= len(manifest):
        raise CtcidError(
            f"{SPLIT_NAME} names rows beyond the manifest; re-run 'ctcid split' on this manifest"
        )
    if labels.iloc[np.concatenate([train, test])].isna().any():
        raise CtcidError(
            f"{SPLIT_NAME} names unlabelled manifest rows; re-run 'ctcid split' on this manifest"
        )
    return split, labels


def _fit_rows(manifest: pd.DataFrame, labels: pd.Series, split: Split, rows: np.ndarray, seed: int):
    y = labels.iloc[rows].to_numpy(dtype=np.int64)
    weights = split.class_weight_vector()[y]
    return fit_gbm(feature_matrix(manifest, rows), y, seed, sample_weight=weights)


def fit_gbm_baseline(
    manifest: pd.DataFrame, split: Split | Mapping[str, Any], seed: int, target_sensitivity: float
) -> GbmBaseline:
    """The GBM on ``train_balanced``, its operating and counting thresholds from the split's CV folds."""
    split, labels = _checked(manifest, split)
    oof_true, oof_score, oof_patients = [], [], []
    for number, fold in enumerate(split.folds):
        held_out = fold.val_all[labels.iloc[fold.val_all].notna().to_numpy()]
        if fold.train.size == 0 or held_out.size == 0:
            continue
        model = _fit_rows(manifest, labels, split, fold.train, seed + number)
        oof_true.append(labels.iloc[held_out].to_numpy(dtype=np.int64))
        oof_score.append(model.predict_proba(feature_matrix(manifest, held_out))[:, 1])
        oof_patients.append(manifest["sample"].astype(str).to_numpy()[held_out])
    y_oof = np.concatenate(oof_true) if oof_true else np.empty(0, dtype=np.int64)
    s_oof = np.concatenate(oof_score) if oof_score else np.empty(0)
    p_oof = np.concatenate(oof_patients) if oof_patients else np.empty(0, dtype=str)
    # without CV folds (or CTCs in them) the GBM keeps the 0.5 it was trained for, and counts at
    # the split's prior-corrected threshold
    threshold, counting = 0.5, counting_threshold(split)
    if y_oof.sum():
        threshold = threshold_for_sensitivity(y_oof, s_oof, target_sensitivity)
        oof = pd.DataFrame({"y_true": y_oof, "y_score": s_oof})
        counting = count_threshold(oof, p_oof, operating=threshold).threshold
    model = _fit_rows(manifest, labels, split, split.train_balanced, seed)
    return GbmBaseline(model, threshold, counting, y_oof, s_oof, p_oof)


def evaluate_baselines(
    manifest: pd.DataFrame, split: Split | Mapping[str, Any], seed: int, target_sensitivity: float = 0.97
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"rule": (y_true, y_score), "gbm": (y_true, y_score)}`` over ``split.test`` in its order.

    Labels come from the split's own label source so they match the CNN evaluation. The GBM
    trains on ``train_balanced`` weighted by the split's class weights (all 1 after down-sampling).
    """
    split, labels = _checked(manifest, split)
    gbm = fit_gbm_baseline(manifest, split, seed, target_sensitivity)
    test = split.test
    y_test = labels.iloc[test].to_numpy(dtype=np.int64)
    return {
        "rule": (y_test, manifest["rule_label"].iloc[test].to_numpy(dtype=np.float64)),
        "gbm": (y_test, gbm.score(manifest, test)),
    }
