"""Model tests run on the shared tiny cohort (tests/conftest.py), one torch thread each."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # the machines running the suite are shared: keep each test on one thread
    torch.set_num_threads(1)
