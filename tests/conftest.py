"""Shared by every test: no telemetry (src/ctcid/offline.py), and the stage inputs of a tiny cohort.

The model and registry tests train on :func:`synthetic_stage_inputs` (see tests/factory.py).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ctcid.config import SplitParams
from ctcid.offline import go_offline
from ctcid.split import make_split, write_split
from factory import CROP_SIZE, POSTGRES, draw_cells, draw_crops, make_annotations, make_manifest

go_offline()
# BentoML reads its home when first imported: never the developer's ~/bentoml from a test
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="ctcid-test-bentoml-"))


@pytest.fixture(scope="session")
def synthetic_stage_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """crops.npy, manifest.parquet, split.json (2 folds) and annotations of 96 cells in 6 samples."""
    root = tmp_path_factory.mktemp("stage_inputs")
    rng = np.random.default_rng(7)
    n = 96
    labels = (rng.random(n) < 0.4).astype(np.float64)
    labels[rng.choice(n, size=8, replace=False)] = np.nan  # unmatched detections: no label
    samples = np.array([f"S{i % 6:03d}" for i in range(n)])
    truth = np.nan_to_num(labels, nan=0.0).astype(bool)
    cells = draw_cells(truth, rng)
    np.save(root / "crops.npy", draw_crops(cells, CROP_SIZE, rng))
    # the rule baseline errs on about one cell in ten, so its ROC is not a perfect corner
    rule = np.where(rng.random(n) < 0.9, truth, ~truth).astype(np.int8)
    manifest = make_manifest(cells=cells, seed=7, sample=samples, true_label=labels, rule_label=rule)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    split = make_split(manifest, SplitParams(by="cell", test_size=0.25, n_folds=2), seed=0)
    write_split(split, root / "split.json")
    for sample in np.unique(samples):
        ctc = int(np.nansum(labels[samples == sample]))
        folder = root / "raw" / sample
        folder.mkdir(parents=True)
        # one CTC more than the labelled ones: a cell segmentation missed still counts as true
        kinds = ["ctc"] * (ctc + 1) + ["leukocyte"] * 3
        make_annotations(cell_type=kinds, sample=sample).to_csv(folder / "annotations.csv", index=False)
    return {
        "crops": root / "crops.npy",
        "manifest": root / "manifest.parquet",
        "split": root / "split.json",
        "raw": root / "raw",
    }


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL, dropped (its connections first) afterwards.

    Skipped, with the reason printed, only where no PostgreSQL answers at :data:`POSTGRES`.
    """
    import psycopg

    try:
        admin = psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL is not reachable at {POSTGRES}: {str(error).strip()}"
        print(reason)
        pytest.skip(reason)
    name = f"ctcid_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
