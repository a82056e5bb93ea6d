"""How much data a retrain saw: samples, fields, cells and CTCs of the segment stage's manifest,
now or as a git revision's ``dvc.lock`` recorded it (read through DVC's cache or remote)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ctcid.paths import MANIFEST_FILE


@dataclass(frozen=True)
class DataStats:
    samples: int
    fields: int
    cells: int
    ctcs: int  # annotated CTCs among the segmented cells (truth labels; 0 without annotations)

    @classmethod
    def of(cls, manifest: pd.DataFrame) -> DataStats:
        fields = manifest[["sample", "field"]].drop_duplicates()
        ctcs = 0
        if "true_label" in manifest:
            ctcs = int(manifest["true_label"].astype("Int8").fillna(0).sum())
        return cls(int(manifest["sample"].nunique()), len(fields), len(manifest), ctcs)

    def minus(self, other: DataStats | None) -> DataStats:
        if other is None:
            return self
        return DataStats(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class BatchReport:
    """The data at the baseline (``since`` names it) and now."""

    since: str
    before: DataStats | None
    now: DataStats | None

    @property
    def added(self) -> DataStats | None:
        return None if self.now is None else self.now.minus(self.before)

    def to_dict(self) -> dict[str, object]:
        def plain(stats: DataStats | None) -> dict[str, int] | None:
            return None if stats is None else stats.to_dict()

        return {"since": self.since, "before": plain(self.before), "now": plain(self.now),
                "added": plain(self.added)}


def stats_now(root: Path, manifest: Path = MANIFEST_FILE) -> DataStats | None:
    path = root / manifest
    return DataStats.of(pd.read_parquet(path, columns=_COLUMNS)) if path.exists() else None


def stats_at(root: Path, rev: str, manifest: Path = MANIFEST_FILE) -> tuple[DataStats | None, str]:
    """The manifest as ``rev``'s dvc.lock recorded it (read through DVC's cache or remote)."""
    import dvc.api
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        with dvc.api.open(str(manifest), repo=str(root), rev=rev, mode="rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, f"{rev} records no {manifest} in a dvc.lock"
    except (DvcException, SCMError) as error:
        first = str(error).split(". ")[0].strip()[:160]  # DVC's messages run to several sentences
        return None, f"cannot read {manifest} at {rev}: {first}"
    return DataStats.of(pd.read_parquet(io.BytesIO(data), columns=_COLUMNS)), ""


_COLUMNS = ["sample", "field", "true_label"]
