"""The quarantine list: inputs a step could not use, with the reason, never silently dropped."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class QuarantineEntry:
    path: str
    stage: str
    reason: str
    hint: str = ""


COLUMNS = [f.name for f in fields(QuarantineEntry)]


def write_quarantine(path: Path, entries: Iterable[QuarantineEntry]) -> int:
    """Write the report (header only when empty, so downstream readers never special-case it)."""
    entries = list(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(e) for e in entries)
    return len(entries)


def read_quarantine(path: Path) -> list[QuarantineEntry]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [QuarantineEntry(**row) for row in csv.DictReader(handle)]
