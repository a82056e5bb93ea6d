"""Helpers of the registry tests: a real ``mlflow server`` process, lenient params, candidate models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ctcid.config.params import Params
from ctcid.offline import OFFLINE_ENVIRONMENT
from factory import free_port, tiny_params, wait_until_ok

BACKBONE = "alexnet"


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    artifacts: Path  # the server's --artifacts-destination

    def stored_files(self, model_id: str, name: str) -> list[Path]:
        """The server's own copies of a logged model's file (not a download)."""
        return [p for p in self.artifacts.rglob(name) if model_id in p.parts]


@contextmanager
def running_mlflow_server(
    root: Path, timeout_s: float = 120, backend_store: str | None = None
) -> Iterator[MlflowServer]:
    """``mlflow server`` serving the artifacts under ``root`` on a free loopback port, its backend
    store ``backend_store`` (default: SQLite under ``root``); the log is printed if it never answers."""
    port = free_port()
    log_path = root / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", backend_store or f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**OFFLINE_ENVIRONMENT, **os.environ},
        )
        uri = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(server, f"{uri}/health", timeout_s, log_path)
            except RuntimeError:
                print(log_path.read_text())
                raise
            yield MlflowServer(uri, root / "artifacts")
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def server_params(uri: str, model_name: str, **registry: object) -> Params:
    """tiny_params tracked on the server, with a lenient gate a few-epoch model can meet."""
    base = tiny_params(Path("unused"), [BACKBONE], epochs=4, patience=4)
    policy = {
        "min_sensitivity": 0.5, "min_specificity": 0.5, "max_patient_mae": 50.0,
        "behaviour_checks": False, "behaviour_probes": 32,
        # seconds-long models tie the rule at best; the rule floor has its own tests (test_rule_floor.py)
        "max_mae_over_rule": None, "max_blank_positive_over_rule": None, **registry,
    }
    mlflow = {"tracking_uri": uri, "experiment": "ctcid-registry-test", "model_name": model_name}
    return base.model_copy(
        update={
            "mlflow": base.mlflow.model_copy(update=mlflow),
            "registry": base.registry.model_copy(update=policy),
        }
    )


@dataclass(frozen=True)
class Candidate:
    """A models folder (``<backbone>/model.pt`` + run.json) and the reports evaluate wrote for it."""

    models: Path
    reports: Path

    def copy_to(self, folder: Path) -> Candidate:
        """A private copy: register writes the card and registration.json into the reports."""
        shutil.copytree(self.models, folder / "models")
        shutil.copytree(self.reports, folder / "reports")
        return Candidate(folder / "models", folder / "reports")

    def selected_metrics(self) -> dict:
        report = json.loads((self.reports / "metrics.json").read_text())
        return report["models"][report["selected"]]
