"""MLflow tracking shared by the steps: experiment, runs, params, metrics, artifacts and lineage tags.

Nothing here imports the model code, so the registry and evaluation use it without torch. The
tracking URI and experiment come from ``params.mlflow`` only, so moving from the embedded
SQLite default to a tracking server is a configuration change. Runs are driven through an
explicit :class:`MlflowClient` and run ids rather than MLflow's global "active run" stack, so a
failing fold cannot leave a later run nested under the wrong parent.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from ctcid.config import MlflowParams

PARENT_TAG = "mlflow.parentRunId"
# MLflow stores at most this many characters per param value.
_PARAM_LIMIT = 6000


def artifact_uri(location: str) -> str:
    """A URI as is; a plain folder as an absolute file URI (MLflow needs it absolute)."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).resolve().as_uri()


def open_experiment(params: MlflowParams) -> tuple[MlflowClient, str]:
    """The client for ``params.tracking_uri`` and the id of ``params.experiment``, created if new."""
    client = MlflowClient(tracking_uri=params.tracking_uri)
    experiment = client.get_experiment_by_name(params.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    try:
        return client, client.create_experiment(params.experiment, artifact_uri(params.artifact_location))
    except MlflowException:  # created meanwhile by a parallel stage
        experiment = client.get_experiment_by_name(params.experiment)
        if experiment is None:
            raise
        return client, experiment.experiment_id


@contextmanager
def tracked_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    parent_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Create a run, yield its id, and end it FINISHED, or FAILED when the block raises."""
    all_tags = dict(tags or {})
    if parent_id is not None:
        all_tags[PARENT_TAG] = parent_id
    run_id = client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    flat = _flatten(params)
    client.log_batch(run_id, params=[Param(k, str(v)[:_PARAM_LIMIT]) for k, v in sorted(flat.items())])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
    """Finite numbers only: MLflow would store NaN, but it breaks charts and comparisons."""
    now = int(time.time() * 1000)
    flat = {k: float(v) for k, v in _flatten(metrics).items() if _is_finite_number(v)}
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in sorted(flat.items())])


def log_artifacts(
    client: MlflowClient, run_id: str, paths: Iterable[Path | str], folder: str | None = None
) -> None:
    """Log files under ``folder`` of the run's artifacts (its root when None)."""
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=folder)


def lineage_tags(root: str | Path = ".") -> dict[str, str]:
    """Git commit and DVC data hashes of the working tree, for whatever of them exists.

    ``dvc.raw_md5`` comes from ``data/raw.dvc``; every ``data/...`` output recorded in
    ``dvc.lock`` (segment crops and manifest, split) adds ``dvc.md5:<path>``.
    """
    root = Path(root)
    tags: dict[str, str] = {}
    commit = _git_commit(root)
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    raw = _read_yaml(root / "data" / "raw.dvc")
    for out in raw.get("outs", []) if isinstance(raw.get("outs"), list) else []:
        if isinstance(out, dict) and out.get("md5"):
            tags["dvc.raw_md5"] = str(out["md5"])
    lock = _read_yaml(root / "dvc.lock")
    stages = lock.get("stages", {}) if isinstance(lock.get("stages"), dict) else {}
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            path = str(out.get("path", "")) if isinstance(out, dict) else ""
            if path.startswith("data/") and out.get("md5"):
                tags[f"dvc.md5:{path}"] = str(out["md5"])
    return tags


def _git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_finite_number(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and abs(number) != float("inf")
