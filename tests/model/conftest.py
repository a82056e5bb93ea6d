"""Fixtures of the model tests: the stage inputs of a tiny synthetic cohort (see synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import CROP_SIZE, draw_crops, make_manifest

from ctcid.config import SplitParams
from ctcid.split import make_split, write_split


@pytest.fixture(scope="session")
def synthetic_stage_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """crops.npy, manifest.parquet, split.json (2 folds) and annotations of 96 cells in 6 samples."""
    root = tmp_path_factory.mktemp("stage_inputs")
    rng = np.random.default_rng(7)
    n = 96
    labels = (rng.random(n) < 0.4).astype(np.float64)
    labels[rng.choice(n, size=8, replace=False)] = np.nan  # unmatched detections: no label
    samples = np.array([f"S{i % 6:03d}" for i in range(n)])
    np.save(root / "crops.npy", draw_crops(np.nan_to_num(labels, nan=0.0).astype(bool), CROP_SIZE, rng))
    manifest = make_manifest(labels, samples, rng)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    split = make_split(manifest, SplitParams(by="cell", test_size=0.25, n_folds=2), seed=0)
    write_split(split, root / "split.json")
    for sample in np.unique(samples):
        ctc = int(np.nansum(labels[samples == sample]))
        folder = root / "raw" / sample
        folder.mkdir(parents=True)
        # one CTC more than the labelled ones: a cell segmentation missed still counts as true
        pd.DataFrame({"label": ["CTC"] * (ctc + 1) + ["non-CTC"] * 3}).to_csv(
            folder / "annotations.csv", index=False
        )
    return {
        "crops": root / "crops.npy",
        "manifest": root / "manifest.parquet",
        "split": root / "split.json",
        "raw": root / "raw",
    }


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # the machines running the suite are shared: keep each test on one thread
    torch.set_num_threads(1)
