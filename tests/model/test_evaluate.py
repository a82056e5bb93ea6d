"""The evaluate stage's choices that are not covered by the end-to-end run's assertions."""

from __future__ import annotations

import pytest

from ctcid.evaluation.evaluate import counting_threshold
from ctcid.split import Split


def _split(ctc: int, non_ctc: int) -> Split:
    return Split.from_dict(
        {
            "by": "sample",
            "label_source": "truth",
            "seed": 0,
            "train": [],
            "test": [],
            "train_balanced": [],
            "folds": [],
            "counts": {"train": {"ctc": ctc, "non_ctc": non_ctc}},
        }
    )


def test_counting_threshold_follows_the_training_prevalence() -> None:
    # 5 % CTCs among the training patients' cells: a balanced model must reach 0.95 to count one
    assert counting_threshold(_split(50, 950)) == pytest.approx(0.95)
    assert counting_threshold(_split(500, 500)) == pytest.approx(0.5)


def test_counting_threshold_falls_back_to_one_half_without_both_classes() -> None:
    assert counting_threshold(_split(0, 100)) == 0.5
