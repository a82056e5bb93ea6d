"""Cohort-level tables derived from the manifest: labels, samples and fields.

The gate's dataset-wide checks (CTC share, positives for CV, cells per sample, quarantined share)
are aggregates; expressing them as ordinary column expectations over small derived tables lets
Great Expectations report the observed value and Data Docs show it next to the bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

import numpy as np
import pandas as pd

from ctcid.contracts import LABEL_COLUMNS, LabelSource
from ctcid.quarantine import QuarantineEntry


def missing_columns(manifest: pd.DataFrame, needed: Sequence[str]) -> list[str]:
    return [column for column in needed if column not in manifest.columns]


def label_table(manifest: pd.DataFrame, label_source: LabelSource) -> pd.DataFrame:
    """Per cell: ``label`` (true_label where known, else rule_label) and ``split_label``.

    ``split_label`` is the label the split stage will use (``split.label_source``), NaN where the
    cell is unlabelled, so its sum is the number of positives that stratified CV can draw on.
    """
    truth, rule = (
        pd.to_numeric(manifest[LABEL_COLUMNS[source]], errors="coerce").astype("float64")
        for source in ("truth", "rule")
    )
    split = truth if label_source == "truth" else rule
    return pd.DataFrame({"label": truth.fillna(rule).to_numpy(), "split_label": split.to_numpy()})


def sample_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per sample (indexed by sample id, so failures name the sample) with its cell count."""
    counts = manifest.groupby(manifest["sample"].astype(str), sort=True).size()
    return pd.DataFrame({"n_cells": counts.to_numpy(dtype=np.int64)}, index=counts.index.rename("sample"))


def field_table(manifest: pd.DataFrame, quarantined: Sequence[QuarantineEntry]) -> pd.DataFrame:
    """One row per input field: the fields that produced cells, then every quarantined input.

    A quarantined field has no rows in the manifest, so the denominator of the quarantined share is
    the manifest's distinct (sample, field) plus the distinct quarantined paths.
    """
    seen = manifest["sample"].astype(str) + "/" + manifest["field"].astype(str)
    used = sorted(set(seen))
    bad = sorted({_field_key(entry.path) for entry in quarantined} - set(used))
    return pd.DataFrame(
        {"quarantined": np.r_[np.zeros(len(used)), np.ones(len(bad))].astype(np.int8)},
        index=pd.Index(used + bad, name="field"),
    )


def _field_key(path: str) -> str:
    # data/raw/<sample>/<field>.tif -> <sample>/<field>, the manifest's own naming
    parts = PurePath(path)
    return f"{parts.parent.name}/{parts.stem}" if parts.parent.name else parts.stem
