"""Non-CNN baselines scored on the same test rows as the CNNs.

* ``rule``: the paper's manual criterion as segmentation measures it (CD45-negative and
  ``cep8_spots >= 3``), i.e. the manifest's ``rule_label`` used as the score. With
  ``split.label_source: rule`` it is the label itself and trivially perfect.
* ``gbm``: gradient-boosted trees on the hand-made per-cell features, trained on the
  (balanced) training rows; tells whether a CNN earns its cost over classical features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from ctcid.contracts import FEATURE_COLUMNS, cell_labels
from ctcid.errors import CtcidError
from ctcid.paths import SPLIT_NAME
from ctcid.split import Split


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


def evaluate_baselines(
    manifest: pd.DataFrame, split: Split | Mapping[str, Any], seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"rule": (y_true, y_score), "gbm": (y_true, y_score)}`` over ``split.test`` in its order.

    Labels come from the split's own label source so they match the CNN evaluation. The GBM
    trains on ``train_balanced`` weighted by the split's class weights (all 1 after down-sampling).
    """
    if not isinstance(split, Split):
        split = Split.from_dict(split)
    _columns(manifest, ("rule_label",))
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
    y_train = labels.iloc[train].to_numpy(dtype=np.int64)
    y_test = labels.iloc[test].to_numpy(dtype=np.int64)
    weights = split.class_weight_vector()[y_train]
    model = fit_gbm(feature_matrix(manifest, train), y_train, seed, sample_weight=weights)
    return {
        "rule": (y_test, manifest["rule_label"].iloc[test].to_numpy(dtype=np.float64)),
        "gbm": (y_test, model.predict_proba(feature_matrix(manifest, test))[:, 1]),
    }
