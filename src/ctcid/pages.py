"""The pages a user opens after ``make run``: their direct links, and the servers behind them.

* **MLflow UI** (``ctcid ui``, ``make mlflow``): MLflow 3.17 opens every experiment in its GenAI
  view (traces, tokens) unless the address asks for the training view: the UI keeps its "GenAI /
  Model training" switch in the browser and reads ``workflowType`` from the URL, and no server or
  experiment setting changes that default (the ``mlflow.experimentKind`` tag ctcid sets is read
  only when that switch is absent). So every link printed here carries
  ``?workflowType=machine_learning`` and lands on the ``ctcid`` experiment's runs table or on the
  registered model's page.
* **optuna-dashboard** (``ctcid dashboard``, ``make dashboard``): the studies of ``tune.storage``,
  one per backbone, data and configuration (docs/tuning.md#storage-study-names-and-resumption).

Both servers listen on loopback by default: neither has authentication.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.table import Table

from ctcid import paths
from ctcid.config.base import redact_url
from ctcid.config.mlflow import MlflowParams
from ctcid.errors import CtcidError
from ctcid.registry_client import TRAINING_VIEW, model_page  # MLflow UI's "Model training" switch

LOOPBACK = "127.0.0.1"
MLFLOW_PORT = 5000


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@dataclass(frozen=True)
class MlflowLinks:
    """Where the ctcid experiment's runs and the registered model are in an MLflow UI at ``base``."""

    base: str
    experiment_id: str | None
    model_name: str

    @property
    def runs(self) -> str:
        if self.experiment_id is None:  # no run logged yet: the experiment list
            return f"{self.base}/#/experiments?{TRAINING_VIEW}"
        return f"{self.base}/#/experiments/{self.experiment_id}/runs?{TRAINING_VIEW}"

    @property
    def model(self) -> str:
        return model_page(self.base, self.model_name)

    def lines(self) -> str:
        return f"  runs of the experiment:  {self.runs}\n  registered model:        {self.model}"


def experiment_id(params: MlflowParams) -> str | None:
    """The id of ``params.experiment`` in the tracking store, or None where it does not exist yet."""
    from mlflow.tracking import MlflowClient

    if params.tracking_uri.startswith("sqlite:///") and not Path(params.tracking_uri[10:]).is_file():
        return None  # asking would create an empty database
    try:
        experiment = MlflowClient(params.tracking_uri).get_experiment_by_name(params.experiment)
    except Exception as error:  # an unreachable server, a database of another MLflow
        raise CtcidError(
            f"MLflow tracking store {redact_url(params.tracking_uri)} cannot be read "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "check mlflow.tracking_uri (docs/configuration.md)"
        ) from None
    return experiment.experiment_id if experiment is not None else None


def mlflow_links(params: MlflowParams, host: str = LOOPBACK, port: int = MLFLOW_PORT) -> MlflowLinks:
    """Links into the configured tracking server, or into ``mlflow ui`` on ``host:port``."""
    base = params.tracking_uri.rstrip("/") if is_server(params.tracking_uri) else f"http://{host}:{port}"
    return MlflowLinks(base, experiment_id(params), params.model_name)


def mlflow_ui_command(params: MlflowParams, host: str, port: int) -> list[str]:
    """``mlflow ui`` on the tracking database; a tracking server already is its UI."""
    if is_server(params.tracking_uri):
        raise CtcidError(
            f"mlflow.tracking_uri is the server {params.tracking_uri}: its UI is there, nothing to start"
        )
    store = params.tracking_uri
    return [_tool("mlflow"), "ui", "--backend-store-uri", store, "--host", host, "--port", str(port)]


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    return [_tool("optuna-dashboard"), storage, "--host", host, "--port", str(port)]


def _tool(name: str) -> str:
    """A console script of this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise CtcidError(f"{name} is not installed; run make install (the dev extra has it)")
    return found


@dataclass(frozen=True)
class StudyRow:
    name: str
    backbone: str
    complete: int
    pruned: int
    failed: int
    best: float | None
    current: bool  # named by reports/tune/<backbone>.json: the study the current models came from


def studies(storage: str, prefix: str, reports_dir: Path = paths.REPORTS_DIR) -> list[StudyRow]:
    """Every study in ``storage``, newest first per backbone, marking those the tune reports name."""
    import optuna
    from optuna.trial import TrialState

    from ctcid.contracts import BACKBONES

    if storage.startswith("sqlite:///") and not Path(storage[10:]).is_file():
        return []
    current = set()
    for report in (Path(reports_dir) / paths.TUNE_REPORTS).glob("*.json"):
        try:
            current.add(json.loads(report.read_text())["study"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a report of another version: the mark is a convenience
    rows = []
    for summary in reversed(optuna.get_all_study_summaries(storage, include_best_trial=True)):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [trial.state for trial in study.trials]
        rest = summary.study_name.removeprefix(f"{prefix}-")
        backbone = next((b for b in BACKBONES if rest.startswith(f"{b}-")), "?")
        best = summary.best_trial.value if summary.best_trial is not None else None
        counts = [states.count(state) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        rows.append(StudyRow(summary.study_name, backbone, *counts, best, summary.study_name in current))
    return sorted(rows, key=lambda row: (row.backbone, not row.current))


def study_table(rows: list[StudyRow]) -> Table:
    table = Table(title="Optuna studies (tune.storage)", box=box.SIMPLE_HEAD)
    # whole names, as the dashboard lists them; the backbone is the name's second part
    table.add_column("study", min_width=max(len(row.name) for row in rows), overflow="fold")
    table.add_column("trials", justify="right")  # complete/pruned/failed
    table.add_column("best", justify="right")
    table.add_column("current")
    for row in rows:
        best = "-" if row.best is None else f"{row.best:.4f}"
        trials = f"{row.complete}/{row.pruned}/{row.failed}"
        table.add_row(row.name, trials, best, "yes" if row.current else "")
    return table


STUDY_NAMES = (
    "A study is named <tune.study_prefix>-<backbone>-data<hash>-cfg<hash>: the data hash is of the crops, "
    "manifest and split it tuned on, the cfg hash of the objective, space and fixed training settings. New "
    "data or settings start a new study. Trials: complete/pruned/failed. 'current' marks the study "
    "reports/tune/<backbone>.json names, which the train stage used. Objective: docs/tuning.md."
)


def exec_server(command: list[str]) -> None:
    """Replace this process with the server: Ctrl+C and signals reach it directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
