"""One changed metric: its change, and whether the summary shows it (the headline metrics)."""

from __future__ import annotations

import math

import pytest

from ctcid.retrain.changes import MetricChange


@pytest.mark.parametrize(
    ("path", "metric", "headline"),
    [
        ("reports/metrics.json", "models.resnet18.operating.auc", True),
        ("reports/metrics.json", "models.gbm.operating.specificity", True),
        ("reports/metrics.json", "models.vgg16.patients.mae", True),
        ("reports/metrics.json", "models.alexnet.cv_objective", True),
        ("reports/metrics.json", "models.resnet18.ci95.auc.low", False),  # an interval bound
        ("reports/metrics.json", "models.resnet18.operating.tp", False),
        ("reports/metrics.json", "models.resnet18.operating.auc.extra", False),  # the whole name must match
        ("reports/segmentation.json", "detection_recall", True),
        ("reports/segmentation.json", "true_ctc", True),
        ("reports/segmentation.json", "spot_count_exact", False),
        ("reports/validation.json", "stats.n_samples", True),
        ("reports/validation.json", "n_samples", False),
        ("reports/train/resnet18.json", "cv_mean.auc", True),
        ("reports/train/resnet18.json", "objective.specificity_at_sensitivity", True),
        ("reports/train/resnet18.json", "folds.auc", False),
        ("reports/tune/alexnet.json", "best.value", True),
        ("reports/tune/alexnet.json", "trials.pruned", True),
        ("reports/tune/alexnet.json", "trials.failed", False),
        ("reports/promotion.json", "promoted", False),
        ("other/metrics.json", "models.resnet18.operating.auc", False),  # the whole path must match
    ],
)
def test_headline(path: str, metric: str, headline: bool) -> None:
    assert MetricChange(path, metric, 0.5, 0.6).headline is headline


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        (0.9, 0.95, 0.05),
        (60, 61, 1.0),
        (1, 0.5, -0.5),
        (None, 0.9, None),  # a new metric
        (0.9, None, None),  # a metric gone
        ("ok", "ok!", None),
        (True, False, None),  # booleans are not numbers here
        (float("nan"), 0.5, None),
        (0.5, float("inf"), None),
    ],
)
def test_change(old: object, new: object, change: float | None) -> None:
    found = MetricChange("reports/metrics.json", "x", old, new).change
    if change is None:
        assert found is None
    else:
        assert found is not None and math.isclose(found, change)


def test_changed_and_as_json() -> None:
    assert not MetricChange("p", "m", 1, 1).changed
    assert MetricChange("p", "m", None, 1).changed
    assert MetricChange("p", "m", 1.0, 2).to_dict() == {
        "path": "p", "metric": "m", "old": 1.0, "new": 2, "diff": 1.0
    }
