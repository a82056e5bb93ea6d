"""Helpers of the tuning tests: tiny studies, params files, ``ctcid tune`` processes, MLflow look-ups."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from optuna.trial import FrozenTrial, TrialState

from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.paths import StageInputs
from ctcid.tracking import PARENT_TAG
from ctcid.tuning.tune import TuneOutcome
from factory import tiny_params

BACKBONE = "alexnet"
CTCID = str(Path(sys.executable).with_name("ctcid"))  # the installed command, as users run it
WIDE = {**os.environ, "COLUMNS": "500"}  # rich would wrap its lines at 80 columns, paths too
# learning rates below about 1e-5 leave AlexNet near its random start in two epochs: trials differ
SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"low": 1e-7, "high": 3e-3, "log": True},
    "negatives": {"choices": ["downsample", "class_weight"]},
}


def tune_params(root: Path, *, train: dict[str, Any] | None = None, **tune: Any) -> Params:
    """A seconds-long study of AlexNet on the tiny cohort: SQLite storage and MLflow under ``root``."""
    base = tiny_params(root, [BACKBONE], **{"epochs": 2, "threads": 1, **(train or {})})
    raw = base.model_dump(mode="json", by_alias=True)
    raw["tune"] = {
        "n_trials": 3,
        "timeout_s": None,
        "storage": f"sqlite:///{root / 'optuna.db'}",
        "pruner": "none",
        "space": SPACE,
        **tune,
    }
    return parse_params(raw)


@dataclass(frozen=True)
class Tuned:
    """A study tuned in-process (the ``tuned`` fixture)."""

    root: Path
    params: Params
    outcome: TuneOutcome

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def stage_inputs(files: dict[str, Path]) -> StageInputs:
    return StageInputs(files["crops"], files["manifest"], files["split"])


def write_params(params: Params, path: Path) -> Path:
    """The params file 'ctcid show-params' would print for ``params``."""
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


def tune_command(params_file: Path, files: dict[str, Path], reports: Path, *extra: str) -> list[str]:
    return [
        CTCID,
        "tune",
        "--backbone",
        BACKBONE,
        "--crops",
        str(files["crops"]),
        "--manifest",
        str(files["manifest"]),
        "--split",
        str(files["split"]),
        "--reports",
        str(reports),
        "--params",
        str(params_file),
        *extra,
    ]


def only_study(storage: str) -> optuna.Study | None:
    """The one study in ``storage``, or None while there is none yet."""
    names = optuna.get_all_study_names(storage)
    assert len(names) <= 1, names
    return optuna.load_study(study_name=names[0], storage=storage) if names else None


def wait_for(
    process: subprocess.Popen, storage: str, ready: Callable[[list[FrozenTrial]], bool], timeout_s: float
) -> list[FrozenTrial]:
    """Poll the study of a running ``ctcid tune`` until ``ready(trials)``; fail if it ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        study = only_study(storage)
        trials = study.get_trials() if study is not None else []
        if ready(trials):
            return trials
        time.sleep(0.1)
    raise AssertionError(f"the study never got ready (exit status {process.poll()})")


def one_complete_and_one_training(trials: list[FrozenTrial]) -> bool:
    """A trial is complete and the next one trains (its MLflow run is open)."""
    complete = any(t.state == TrialState.COMPLETE for t in trials)
    return complete and any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials)


def study_is_open_and_training(trials: list[FrozenTrial]) -> bool:
    """The worker has queued the baseline, opened the study's MLflow run and trains a trial."""
    return any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials)


def finished_trials(study: optuna.Study) -> dict[int, tuple[str, float | None, dict[str, Any]]]:
    """number -> (state, value, values) of the complete and pruned trials."""
    return {
        t.number: (t.state.name, t.value, dict(t.params))
        for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    }


# --- MLflow ----------------------------------------------------------------------------------------


def all_runs(params: Params) -> list[Run]:
    client = MlflowClient(params.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(params.mlflow.experiment)
    return client.search_runs([experiment.experiment_id], max_results=5000)


def tune_parents(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.data.tags.get("stage") == "tune" and PARENT_TAG not in r.data.tags]


def children(runs: list[Run], parent_id: str) -> list[Run]:
    return [r for r in runs if r.data.tags.get(PARENT_TAG) == parent_id]
