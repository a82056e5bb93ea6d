"""The counting threshold of one model: chosen for per-patient counts on its out-of-fold predictions.

A model has two thresholds. The *operating* threshold (``ModelInfo.threshold``) is the call for
review: the highest one that reaches ``train.target_sensitivity`` over the pooled out-of-fold cells.
It is chosen for cell sensitivity, so it sits low; applied to every detection of a patient, where
CTCs are a few per cent of thousands of leukocytes, its false positives add up and it over-counts.
The *counting* threshold answers another question, "how many CTCs has this patient?", and is chosen
for that: :func:`count_threshold` takes the cut-off with the fewest count errors per patient (mean
absolute error of the count) over the training patients' out-of-fold predictions, where every
training cell is scored by a model that never saw its patient. The test set is never used.

Models saved before ctcid chose one (``ModelInfo.count_threshold`` None) count at the split's
prior-corrected threshold (:func:`ctcid.split.counting_threshold`); :func:`model_count_threshold`
is the one place that decides which applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ctcid.split import Split, counting_threshold


@dataclass(frozen=True)
class CountChoice:
    """The chosen counting threshold and the out-of-fold per-patient count error around it."""

    threshold: float
    mae: float  # mean absolute count error per patient at ``threshold``
    mae_at_half: float  # ... at 0.5
    mae_at_operating: float | None  # ... at the operating threshold, when given
    n_patients: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Thresholds whose out-of-fold count error is within this many CTCs per patient of the least are as
# good: a patient bootstrap interval of the MAE is some 0.3 wide. Of those, the widest plateau wins.
# Without it a fusion model (docs/training.md#spot-features-the-fusion-model) counted at 0.0025, deep
# in the tail of near-certain negatives, where fold models and the final model order cells
# differently: the final VGG16 then counted 68 CTCs per patient on the test set.
SLACK_PER_PATIENT = 0.05


def count_threshold(
    oof: pd.DataFrame,
    patients: np.ndarray | pd.Series,
    true_counts: Mapping[str, int] | None = None,
    operating: float | None = None,
) -> CountChoice:
    """The threshold in (0, 1] that minimises the mean absolute per-patient count error on ``oof``.

    ``oof`` holds out-of-fold predictions (``y_true``, ``y_score``; ``crop_index`` is not read),
    ``patients[i]`` the patient of row ``i``. A patient's predicted count at ``t`` is its rows with
    ``y_score >= t``; its true count is ``true_counts[patient]`` or, without the mapping, the sum of
    its rows' ``y_true``. Patients of ``true_counts`` without rows count 0 at every threshold.

    Why: the operating threshold is chosen for cell sensitivity; applied to every detection, where
    CTCs are a few per cent, it over-counts. Counting wants the fewest count errors per patient.

    The search is exact and vectorised (O(n log n)): counts change only at the observed scores, so
    each distinct score ``u`` stands for every threshold in ``(next lower score, u]``, and one more
    interval ``(highest score, 1]`` counts nothing. The error of each is a running sum over the
    cells in decreasing score order: a patient's next counted cell adds 1 to its error once its count
    has reached its true count and takes 1 off before. Of the intervals with the least error, runs
    of adjacent ones merge into plateaus; the threshold is the middle of the widest plateau (the
    lowest of equally wide ones), so it never sits on a score where the error jumps. "Least" admits
    :data:`SLACK_PER_PATIENT` CTCs per patient, so a wide, stable plateau beats a narrow one a few
    cells better on these folds.
    ``operating`` (the model's operating threshold) is only scored, for comparison.
    """
    scores = np.asarray(oof["y_score"], dtype=np.float64)
    y_true = np.asarray(oof["y_true"], dtype=np.int64)
    names = np.asarray(patients).astype(str)
    if names.shape != scores.shape:
        raise ValueError(f"{names.size} patients for {scores.size} out-of-fold rows")
    if not np.all(np.isfinite(scores)) or np.any((scores < 0.0) | (scores > 1.0)):
        raise ValueError("out-of-fold scores must be probabilities in [0, 1]")
    truth = _true_counts(names, y_true, true_counts)
    labels = np.array(sorted(truth))
    true = np.array([truth[name] for name in labels], dtype=np.int64)
    patient = np.searchsorted(labels, names)

    # cells in decreasing score order; the rank of each among its patient's cells so far
    order = np.argsort(-scores, kind="stable")
    ranked, owner = scores[order], patient[order]
    rank = pd.Series(owner).groupby(owner).cumcount().to_numpy()
    step = np.where(rank >= true[owner], 1, -1)
    # error after counting the first m cells (m = 0 .. n); a threshold counts a whole tie group
    errors = int(true.sum()) + np.concatenate([[0], np.cumsum(step)])
    distinct, first = np.unique(-ranked, return_index=True)  # decreasing scores, each group's start
    distinct = -distinct
    ends = np.append(first[1:], ranked.size)  # cells counted at threshold = that score
    positive = distinct > 0.0  # a threshold lies in (0, 1]: cells scored 0 are never counted
    highs = distinct[positive]
    lows = np.append(distinct[1:], 0.0)[positive]
    totals = errors[ends[positive]]
    if highs.size == 0 or highs[0] < 1.0:  # (highest score, 1]: nothing counted
        top = highs[0] if highs.size else 0.0
        highs, lows, totals = np.append(1.0, highs), np.append(top, lows), np.append(errors[0], totals)
    n = len(labels)
    threshold = _plateau_middle(highs[::-1], lows[::-1], totals[::-1], slack=SLACK_PER_PATIENT * n)

    def mae(t: float) -> float:
        counted = np.bincount(patient[scores >= t], minlength=n)
        return float(np.abs(counted - true).mean()) if n else 0.0

    return CountChoice(
        threshold=threshold,
        mae=mae(threshold),
        mae_at_half=mae(0.5),
        mae_at_operating=None if operating is None else mae(float(operating)),
        n_patients=n,
    )


def _true_counts(
    names: np.ndarray, y_true: np.ndarray, given: Mapping[str, int] | None
) -> dict[str, int]:
    if given is None:
        counted = pd.Series(y_true, index=names).groupby(level=0).sum()
        return {str(k): int(v) for k, v in counted.items()}
    truth = {str(k): int(v) for k, v in given.items()}
    unknown = sorted(set(names) - set(truth))
    if unknown:
        raise ValueError(f"true_counts lacks patients that have out-of-fold rows: {unknown[:5]}")
    return truth


def _plateau_middle(highs: np.ndarray, lows: np.ndarray, totals: np.ndarray, slack: float = 0.0) -> float:
    """Middle of the widest run of adjacent intervals ``(low, high]`` (ascending) whose summed error
    is within ``slack`` of the least."""
    best = totals <= totals.min() + slack + 1e-9
    # runs of consecutive best intervals: starts where a best one follows a worse one
    edges = np.diff(np.concatenate([[0], best.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    widths = highs[stops] - lows[starts]
    widest = int(np.argmax(widths))
    low, high = float(lows[starts[widest]]), float(highs[stops[widest]])
    middle = (low + high) / 2.0
    return middle if low < middle <= high else high


def model_count_threshold(info: object, fallback: Split | float) -> float:
    """The threshold a model counts CTCs per patient at: its own, else the split's prior-corrected one.

    ``info`` is anything with a ``count_threshold`` (a :class:`~ctcid.model.predict.ModelInfo`, a
    registered version's pyfunc); None or missing (models saved before ctcid chose one) falls back
    to ``fallback``: a split (its :func:`~ctcid.split.counting_threshold`) or that number already.
    """
    own = getattr(info, "count_threshold", None)
    if own is not None:
        return float(own)
    return counting_threshold(fallback) if isinstance(fallback, Split) else float(fallback)
