"""Tuning tests run tiny AlexNet studies on the shared cohort (tests/conftest.py): seconds a trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tuning_support import BACKBONE, Tuned, stage_inputs, tune_params

from ctcid.tuning.tune import tune_backbone


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # the machines running the suite are shared: keep each test on one thread
    torch.set_num_threads(1)


@pytest.fixture(scope="package")
def tuned(synthetic_stage_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    """A finished 3-trial study (baseline first, no pruning) and its report, made in-process.

    The untuned learning rate (1e-6) is a poor one, so later trials beat the baseline (seeded: the
    same trials every run).
    """
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tuned")
    params = tune_params(root, train={"learning_rate": 1e-6}, n_trials=3, baseline_trial=True)
    outcome = tune_backbone(params, BACKBONE, stage_inputs(synthetic_stage_inputs), root / "reports")
    return Tuned(root, params, outcome)
