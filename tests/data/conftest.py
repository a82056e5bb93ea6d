"""A self-contained, contract-following segment output: manifest + crops of 200 cells, 10 % CTC.

Cells come from the test-data factory (tests/factory.py): a DAPI nucleus, CEP8 spots inside it
(2 for leukocytes, 3-5 for CTCs), a CD45 membrane ring on leukocytes only, over a noisy
background; the manifest describes the same cells. A few detections match no annotated cell.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from factory import draw_cells, draw_crops, make_manifest

REPO = Path(__file__).resolve().parents[2]
N_SAMPLES, FIELDS_PER_SAMPLE, CELLS_PER_FIELD, CTC_EVERY = 10, 2, 10, 10


def make_good_data(seed: int, crop_size: int) -> tuple[pd.DataFrame, np.ndarray]:
    """10 samples x 2 fields x 10 cells; every tenth cell a CTC; every 37th unmatched (truth NA)."""
    rng = np.random.default_rng(seed)
    index = np.arange(N_SAMPLES * FIELDS_PER_SAMPLE * CELLS_PER_FIELD)
    cells = draw_cells(index % CTC_EVERY == 3, rng)
    manifest = make_manifest(
        cells=cells,
        seed=seed,
        sample=[f"S{i // (FIELDS_PER_SAMPLE * CELLS_PER_FIELD):02d}" for i in index],
        field=[f"f{(i // CELLS_PER_FIELD) % FIELDS_PER_SAMPLE:03d}" for i in index],
        matched=index % 37 != 5,
    )
    return manifest, draw_crops(cells, crop_size, rng)


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
