"""Which stages a ``dvc repro`` re-ran, read from ``dvc.lock`` before and after.

DVC rewrites a stage's lock entry when (and only when) it runs the stage, one stage at a time, so
comparing the entries names exactly the stages that ran, including after an interruption, and
does not depend on the wording of DVC's console output.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ctcid.paths import DVC_LOCK_FILE


def lock_entries(root: Path) -> dict[str, str]:
    """Stage name -> a canonical text of its lock entry ({} when there is no lock yet)."""
    path = root / DVC_LOCK_FILE
    return _entries(path.read_text()) if path.exists() else {}


def lock_entries_at(root: Path, rev: str) -> dict[str, str] | None:
    """The entries of ``rev``'s committed dvc.lock; None when git has no such revision or file."""
    shown = subprocess.run(
        ["git", "show", f"{rev}:{DVC_LOCK_FILE.as_posix()}"], cwd=root, capture_output=True, text=True
    )
    return _entries(shown.stdout) if shown.returncode == 0 else None


def changed_stages(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Stages whose entry is new or different, in the lock's order (the pipeline's order)."""
    return [name for name, entry in after.items() if before.get(name) != entry]


def pipeline_stages(root: Path, dvc: str = "dvc") -> list[str]:
    """Every stage of dvc.yaml, matrix stages expanded (``tune@resnet18``)."""
    listed = subprocess.run(
        [dvc, "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True, check=True
    )
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def _entries(lock_text: str) -> dict[str, str]:
    stages: Mapping[str, Any] = (yaml.safe_load(lock_text) or {}).get("stages", {})
    return {name: json.dumps(entry, sort_keys=True) for name, entry in stages.items()}
