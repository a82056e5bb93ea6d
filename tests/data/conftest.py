"""A self-contained, contract-following segment output: manifest + crops of ~200 cells, ~10 % CTC.

Crops are drawn like imFISH cells: a DAPI nucleus disc, CEP8 spots inside it (2 for diploid
leukocytes, 3-5 for CTCs), a CD45 membrane ring on leukocytes only, all over a noisy background.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctcid.config import Params, parse_params

REPO = Path(__file__).resolve().parents[2]
N_SAMPLES, FIELDS_PER_SAMPLE, CELLS_PER_FIELD, CTC_EVERY = 10, 2, 10, 10
FIELD_SIZE = 512


def draw_crops(rng: np.random.Generator, is_ctc: np.ndarray, radius: np.ndarray, size: int) -> np.ndarray:
    n = is_ctc.size
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    centre = size / 2 + rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    dist = np.hypot(yy - centre[:, 0, None, None], xx - centre[:, 1, None, None])
    nucleus = np.clip(radius[:, None, None] - dist + 0.5, 0, 1)
    ring = np.clip(1 - np.abs(dist - radius[:, None, None] - 2) / 2, 0, 1) * ~is_ctc[:, None, None]
    spots = np.zeros((n, size, size), np.float32)
    n_spots = np.where(is_ctc, rng.integers(3, 6, n), 2)
    for k in range(5):  # at most 5 spots; vectorised over cells
        angle, rad = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 0.6, n) * radius
        sy, sx = centre[:, 0] + rad * np.sin(angle), centre[:, 1] + rad * np.cos(angle)
        blob = np.exp(-((yy - sy[:, None, None]) ** 2 + (xx - sx[:, None, None]) ** 2) / 2)
        spots += blob * (k < n_spots)[:, None, None]
    signal = np.stack([4000 * nucleus, 3000 * spots, 2000 * ring], axis=1)
    noisy = 250 + signal + rng.normal(0, 25, signal.shape)
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)


def make_good_data(seed: int, crop_size: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = N_SAMPLES * FIELDS_PER_SAMPLE * CELLS_PER_FIELD
    index = np.arange(n)
    is_ctc = index % CTC_EVERY == 3
    radius = np.where(is_ctc, rng.uniform(9, 12, n), rng.uniform(6, 8, n)).astype(np.float32)
    sample = pd.Series([f"S{i // (FIELDS_PER_SAMPLE * CELLS_PER_FIELD):02d}" for i in index], dtype="string")
    field = pd.Series([f"f{(i // CELLS_PER_FIELD) % FIELDS_PER_SAMPLE:03d}" for i in index], dtype="string")
    cell_idx = index % CELLS_PER_FIELD
    cell_id = pd.Series([f"c{i:04d}" for i in index], dtype="string")
    x, y = (rng.uniform(20, FIELD_SIZE - 20, (2, n))).astype(np.float32)
    spots = np.where(is_ctc, rng.integers(3, 6, n), 2).astype(np.int16)
    cd45 = np.where(is_ctc, rng.uniform(0.0, 0.05, n), rng.uniform(0.5, 1.5, n)).astype(np.float32)
    area = (np.pi * radius**2).astype(np.float32)
    # a few detections match no annotated cell: truth unknown there
    matched = index % 37 != 5
    truth = pd.array(np.where(matched, is_ctc.astype(np.int8), 0), dtype="Int8")
    truth[~matched] = pd.NA
    manifest = pd.DataFrame(
        {
            "cell_uid": sample + "/" + field + "/" + pd.Series(cell_idx).astype("string"),
            "sample": sample,
            "field": field,
            "cell_idx": cell_idx.astype(np.int32),
            "crop_index": index.astype(np.int64),
            "x": x,
            "y": y,
            "x0": np.floor(x - radius).astype(np.int32),
            "y0": np.floor(y - radius).astype(np.int32),
            "x1": (np.ceil(x + radius) + 1).astype(np.int32),
            "y1": (np.ceil(y + radius) + 1).astype(np.int32),
            "field_height": np.full(n, FIELD_SIZE, np.int32),
            "field_width": np.full(n, FIELD_SIZE, np.int32),
            "area": area,
            "perimeter": (2 * np.pi * radius).astype(np.float32),
            "circularity": rng.uniform(0.8, 1.05, n).astype(np.float32),
            "solidity": rng.uniform(0.85, 1.0, n).astype(np.float32),
            "dapi_mean": rng.uniform(3000, 5000, n).astype(np.float32),
            "dapi_integrated": (area * 4000).astype(np.float32),
            "cd45_score": cd45,
            "cep8_spots": spots,
            "rule_label": ((cd45 < 0.15) & (spots >= 3)).astype(np.int8),
            "matched": matched,
            "true_cell_id": cell_id.where(matched),
            "true_cell_type": pd.Series(np.where(is_ctc, "ctc", "leukocyte"), dtype="string").where(matched),
            "true_cd45": pd.Series(np.where(is_ctc, "negative", "positive"), dtype="string").where(matched),
            "true_cep8": pd.array(np.where(matched, spots, 0), dtype="Int16"),
            "true_label": truth,
        }
    )
    manifest.loc[~matched, "true_cep8"] = pd.NA
    return manifest, draw_crops(rng, is_ctc, radius, crop_size)


@pytest.fixture(scope="session")
def gate_params() -> Params:
    return parse_params({})


@pytest.fixture(scope="session")
def good_data(gate_params: Params) -> tuple[pd.DataFrame, np.ndarray]:
    return make_good_data(seed=7, crop_size=gate_params.segment.crop_size)


@pytest.fixture(scope="session")
def gx_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root holding a copy of the committed GX context (tests never touch the repo's gx/)."""
    root = tmp_path_factory.mktemp("gx_project")
    (root / "gx").mkdir()
    shutil.copy(REPO / "gx" / "great_expectations.yml", root / "gx" / "great_expectations.yml")
    return root
