"""What a retrain changed in the pipeline's metrics, against a baseline (:mod:`.baseline`): the
metrics it recorded, or ``dvc metrics diff`` against a git revision's dvc.lock."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcid.paths import (
    METRICS_FILE,
    PROMOTION_FILE,
    REPORTS_DIR,
    SEGMENTATION_FILE,
    TRAIN_REPORTS,
    TUNE_REPORTS,
    VALIDATION_FILE,
)
from ctcid.tracking import flatten


def _report(name: str) -> str:
    """A reports file as dvc names it (a path from the repository root)."""
    return f"{REPORTS_DIR.as_posix()}/{name}"


# the files a reader looks at first; the per-backbone train and tune reports follow
_FIRST = tuple(_report(name) for name in (METRICS_FILE, PROMOTION_FILE, SEGMENTATION_FILE, VALIDATION_FILE))
# (file, metric) patterns the summary shows; a retrain changes hundreds (every fold's numbers), all
# of which reports/retrain.json keeps
HEADLINE = [
    (
        re.escape(_report(METRICS_FILE)),
        r"models\.[^.]+\.(operating\.(auc|sensitivity|specificity)|patients\.mae|cv_objective)",
    ),
    (
        re.escape(_report(SEGMENTATION_FILE)),
        r"(fields|true_ctc|detection_precision|detection_recall|rule_sensitivity)",
    ),
    (re.escape(_report(VALIDATION_FILE)), r"stats\.(n_samples|n_cells|ctc_share)"),
    (re.escape(_report(TRAIN_REPORTS)) + r"/[^/]+\.json", r"(objective\.[^.]+|cv_mean\.auc)"),
    (re.escape(_report(TUNE_REPORTS)) + r"/[^/]+\.json", r"(best\.value|trials\.(complete|pruned))"),
]


@dataclass(frozen=True)
class MetricChange:
    path: str
    metric: str
    old: Any
    new: Any

    @property
    def change(self) -> float | None:
        if _number(self.old) and _number(self.new):
            return float(self.new) - float(self.old)
        return None

    @property
    def headline(self) -> bool:
        return any(
            re.fullmatch(path, self.path) and re.fullmatch(metric, self.metric) for path, metric in HEADLINE
        )

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def to_dict(self) -> dict[str, Any]:
        values = {"path": self.path, "metric": self.metric, "old": self.old, "new": self.new}
        return {**values, "diff": self.change}


def metrics_now(root: Path, dvc: str = "dvc") -> dict[str, dict[str, Any]]:
    """``dvc metrics show`` of the workspace, flattened to {path: {"a.b": value}}."""
    shown = _json(_dvc(root, dvc, "metrics", "show", "--json"))
    files = (shown.get("") or {}).get("data") or {}
    return {path: flatten((entry or {}).get("data") or {}) for path, entry in files.items()}


def metrics_diff(
    root: Path,
    rev: str | None,
    before: Mapping[str, Mapping[str, Any]] | None,
    dvc: str = "dvc",
    now: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[MetricChange]:
    """Metrics that differ from ``before`` (flattened as :func:`metrics_now`), else from ``rev``'s.

    ``now``: the workspace's metrics when the caller has read them already.
    """
    if before is not None:
        rows = [
            MetricChange(path, metric, before.get(path, {}).get(metric), value)
            for path, values in (metrics_now(root, dvc) if now is None else now).items()
            for metric, value in values.items()
        ]
    else:
        try:
            diff = _json(_dvc(root, dvc, "metrics", "diff", rev or "HEAD", "--all", "--json"))
        except subprocess.CalledProcessError:
            diff = {}
        rows = [
            MetricChange(path, metric, values.get("old"), values.get("new"))
            for path, metrics in diff.items()
            for metric, values in (metrics or {}).items()
        ]
    return sorted((row for row in rows if row.changed), key=_order)


def _order(row: MetricChange) -> tuple[int, str, str]:
    first = _FIRST.index(row.path) if row.path in _FIRST else len(_FIRST)
    return first, row.path, row.metric


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dvc(root: Path, dvc: str, *args: str) -> str:
    return subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _json(text: str) -> dict[str, Any]:
    return json.loads(text) if text.strip() else {}
