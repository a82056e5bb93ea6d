"""How much data a retrain saw: DataStats of a manifest, the difference of two, and a BatchReport."""

from __future__ import annotations

import pandas as pd
import pytest

from ctcid.retrain.batch import BatchReport, DataStats
from factory import make_manifest


@pytest.fixture
def manifest() -> pd.DataFrame:
    """3 samples, 4 fields (two samples reuse the field name f000), 7 cells, 3 annotated CTCs."""
    return make_manifest(
        sample=["S00", "S00", "S00", "S01", "S01", "S01", "S02"],
        field=["f000", "f000", "f001", "f000", "f000", "f000", "f000"],
        true_label=pd.array([1, 0, pd.NA, 1, 1, pd.NA, 0], dtype="Int8"),
    )


def test_stats_count_samples_fields_cells_and_annotated_ctcs(manifest: pd.DataFrame) -> None:
    assert DataStats.of(manifest) == DataStats(samples=3, fields=4, cells=7, ctcs=3)


def test_cells_without_a_label_are_not_counted_as_ctcs() -> None:
    unlabelled = make_manifest(sample=["S00", "S01"], true_label=pd.array([pd.NA, pd.NA], dtype="Int8"))
    assert DataStats.of(unlabelled) == DataStats(samples=2, fields=2, cells=2, ctcs=0)


def test_a_manifest_without_truth_counts_no_ctcs(manifest: pd.DataFrame) -> None:
    assert DataStats.of(manifest.drop(columns="true_label")).ctcs == 0


def test_minus_subtracts_each_count_and_none_leaves_the_stats_alone() -> None:
    now, before = DataStats(20, 40, 1900, 70), DataStats(14, 28, 1400, 50)
    assert now.minus(before) == DataStats(6, 12, 500, 20)
    assert before.minus(now) == DataStats(-6, -12, -500, -20)
    assert now.minus(None) is now


def test_added_is_the_difference_or_everything_without_a_before() -> None:
    now = DataStats(20, 40, 1900, 70)
    assert BatchReport("HEAD", DataStats(14, 28, 1400, 50), now).added == DataStats(6, 12, 500, 20)
    assert BatchReport("HEAD", None, now).added == now
    assert BatchReport("HEAD", now, None).added is None


def test_report_as_json_names_before_now_and_added() -> None:
    report = BatchReport("HEAD", None, DataStats(2, 3, 5, 1)).to_dict()
    assert report == {
        "since": "HEAD",
        "before": None,
        "now": {"samples": 2, "fields": 3, "cells": 5, "ctcs": 1},
        "added": {"samples": 2, "fields": 3, "cells": 5, "ctcs": 1},
    }
