"""What a retrain compares against: the data and metrics of the last finished retrain.

Kept in ``reports/retrain.json`` as ``next_baseline``. A run that was interrupted or failed
carries its own baseline forward, so the run that resumes it reports the whole batch, not only
the stages left. Without such a record (a fresh clone in CI) the baseline is a git revision's
``dvc.lock`` (HEAD by default: CI commits the lock only through a merged pull request), and
without a lock there, the workspace as it was before the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcid.retrain.batch import DataStats, stats_at, stats_now
from ctcid.retrain.changes import metrics_now
from ctcid.retrain.stages import lock_entries, lock_entries_at


@dataclass(frozen=True)
class Baseline:
    label: str  # how the summary names it
    data: DataStats | None
    metrics: dict[str, dict[str, Any]] | None  # None: 'dvc metrics diff <rev>'
    rev: str | None = None
    # dvc.lock's entries then: the stages that ran since (the gate, say) may span an interruption
    lock: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = None if self.data is None else self.data.to_dict()
        values = {"label": self.label, "data": data, "metrics": self.metrics, "rev": self.rev}
        return {**values, "lock": self.lock}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Baseline:
        data = values.get("data")
        return cls(values["label"], None if data is None else DataStats(**data), values.get("metrics"),
                   values.get("rev"), values.get("lock"))


def resolve(root: Path, since: str | None, record: Path, dvc: str = "dvc") -> Baseline:
    """``since`` (a git revision) when given, else the last retrain's record, else HEAD."""
    if since is None:
        previous = _previous(record)
        if previous is not None:
            return previous
        since = "HEAD"
    lock = lock_entries_at(root, since)
    data, note = stats_at(root, since) if lock is not None else (None, f"{since} has no committed dvc.lock")
    if data is not None:
        return Baseline(since, data, None, rev=since, lock=lock)
    label = f"this workspace before the run ({note})"
    return Baseline(label, stats_now(root), metrics_now(root, dvc), lock=lock_entries(root))


def _previous(record: Path) -> Baseline | None:
    if not record.exists():
        return None
    try:
        values = json.loads(record.read_text()).get("next_baseline")
        return None if not values else Baseline.from_dict(values)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # an unreadable record: fall back to git, the summary says which
