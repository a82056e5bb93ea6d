"""Tiny synthetic crops that follow the segment contract, so model tests need no simulator run.

A CTC is a large DAPI nucleus with 3-5 CEP8 spots and no CD45; a non-CTC a small nucleus with
2 spots inside a CD45 ring. Learnable in a few steps, yet the network must look at the pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ctcid.config import Params, parse_params  # noqa: E402
from ctcid.evaluation.baselines import FEATURES  # noqa: E402

CROP_SIZE = 24
INPUT_SIZE = 16


def draw_crops(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2
    distance = np.hypot(yy - centre, xx - centre)
    crops = rng.normal(200.0, 30.0, size=(len(labels), 3, size, size)).astype(np.float32)
    for crop, label in zip(crops, labels, strict=True):
        radius = rng.uniform(6.0, 8.0) if label else rng.uniform(3.5, 5.0)
        crop[0] += 3000.0 * (distance < radius)
        for _ in range(rng.integers(3, 6) if label else 2):
            angle, r = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius * 0.7)
            sy, sx = centre + r * np.sin(angle), centre + r * np.cos(angle)
            crop[1] += 2500.0 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / 2.0)
        if not label:
            crop[2] += 2000.0 * ((distance >= radius) & (distance < radius + 2.5))
    return np.clip(crops, 0, 65535).astype(np.uint16)


def make_manifest(labels: np.ndarray, samples: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    n = len(labels)
    known = ~np.isnan(labels)
    truth = np.where(known, labels, 0).astype(bool)
    table = pd.DataFrame(
        {
            "cell_uid": [f"{s}/f000/{i}" for i, s in enumerate(samples)],
            "sample": samples,
            "field": "f000",
            "cell_idx": np.arange(n, dtype=np.int32),
            "crop_index": np.arange(n, dtype=np.int64),
            "true_label": pd.array(np.where(known, labels, np.nan), dtype="Float64").astype("Int8"),
            "rule_label": np.where(rng.random(n) < 0.9, truth, ~truth).astype(np.int8),
            "matched": known,
        }
    )
    for name in FEATURES:
        table[name] = (rng.normal(size=n) + truth).astype(np.float32)
    return table


def tiny_params(tmp_path: Path, backbones: list[str], **train: object) -> Params:
    return parse_params(
        {
            "seed": 3,
            "train": {
                "backbones": backbones,
                "input_size": INPUT_SIZE,
                "epochs": 1,
                "patience": 1,
                "batch_size": 16,
                "bootstrap": 50,
                "threads": 0,
                "device": "cpu",
                **train,
            },
            "mlflow": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "mlruns"),
                "experiment": "ctcid-test",
            },
        }
    )
