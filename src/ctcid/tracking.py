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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException

from ctcid.config.base import redact_url
from ctcid.config.mlflow import MlflowParams
from ctcid.errors import TrackingUnavailable
from ctcid.paths import DVC_LOCK_FILE, RAW_DIR, RAW_DVC_FILE, SEGMENT_DIR, SPLIT_DIR

PARENT_TAG = "mlflow.parentRunId"
# MLflow 3 tells a training experiment from a GenAI one by this tag. The 3.17 UI reads its own
# "GenAI / Model training" switch first, so the links ctcid prints also carry it (ctcid.pages).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The data a run saw, as MLflow dataset inputs: name and the DVC-tracked path behind it.
DATASETS = {
    name: folder.as_posix()
    for name, folder in (("ctcid-raw", RAW_DIR), ("ctcid-crops", SEGMENT_DIR), ("ctcid-split", SPLIT_DIR))
}
_REACH_TIMEOUT_S = 5.0
# MLflow stores at most this many characters per param value.
_PARAM_LIMIT = 6000


def artifact_uri(location: str) -> str:
    """A URI as is; a plain folder as an absolute file URI (MLflow needs it absolute)."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).resolve().as_uri()


def experiment_artifacts(params: MlflowParams) -> str | None:
    """Artifact root of a new experiment; a tracking server keeps its own unless given a URI.

    A plain folder means "on this machine", which a server's clients may not share, so with a
    server it is left to the server's ``--artifacts-destination`` (artifacts then go over HTTP).
    """
    location = params.artifact_location
    if params.tracking_uri.startswith(("http://", "https://")) and "://" not in location:
        return None
    return artifact_uri(location)


def check_reachable(tracking_uri: str) -> None:
    """Fail in seconds, naming the URI, when a tracking server does not answer.

    MLflow's own client retries a dead server for minutes and then prints a stack trace; a quick
    probe of the server's ``/health`` endpoint replaces that with one message. Database and file
    URIs need no server and are not probed.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=_REACH_TIMEOUT_S).raise_for_status()
    except requests.RequestException as error:
        reason = type(error).__name__ if not str(error) else str(error).split("(Caused by")[0].strip()
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_url(tracking_uri)} does not answer ({reason}); start it "
            "(docs/registry.md shows the 'mlflow server' command) or set mlflow.tracking_uri in "
            "params.yaml to a reachable server or to the default sqlite:///mlflow.db"
        ) from None


def client_for(params: MlflowParams) -> MlflowClient:
    """A client of the tracking server and model registry, checked to be reachable."""
    check_reachable(params.tracking_uri)
    return MlflowClient(tracking_uri=params.tracking_uri, registry_uri=params.tracking_uri)


def open_experiment(params: MlflowParams) -> tuple[MlflowClient, str]:
    """The client for ``params.tracking_uri`` and the id of ``params.experiment``, created if new."""
    client = client_for(params)
    experiment = client.get_experiment_by_name(params.experiment)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                params.experiment, experiment_artifacts(params), tags=EXPERIMENT_KIND
            )
        except MlflowException:  # created meanwhile by a parallel stage
            experiment = client.get_experiment_by_name(params.experiment)
            if experiment is None:
                raise
    if experiment is not None:
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            if experiment.tags.get(key) != value:  # experiments made before the tag existed
                client.set_experiment_tag(experiment_id, key, value)
    return client, experiment_id


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
    with ending(client, run_id):
        yield run_id


@contextmanager
def ending(client: MlflowClient, run_id: str) -> Iterator[str]:
    """End an open run when the block ends: FINISHED, or FAILED when it raises (Ctrl+C included)."""
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def stage_tags(stage: str, backbone: str) -> dict[str, str]:
    """Tags of a stage's top-level run: lineage, what it is, and the command (the runs table's Source)."""
    return {
        **lineage_tags(),
        "backbone": backbone,
        "stage": stage,
        "mlflow.source.name": f"ctcid {stage} --backbone {backbone}",
        "mlflow.source.type": "LOCAL",
    }


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    flat = flatten(params)
    client.log_batch(run_id, params=[Param(k, str(v)[:_PARAM_LIMIT]) for k, v in sorted(flat.items())])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
    """Finite numbers only: MLflow would store NaN, but it breaks charts and comparisons."""
    now = int(time.time() * 1000)
    flat = {k: float(v) for k, v in flatten(metrics).items() if _is_finite_number(v)}
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in sorted(flat.items())])


def log_artifacts(
    client: MlflowClient, run_id: str, paths: Iterable[Path | str], folder: str | None = None
) -> None:
    """Log files under ``folder`` of the run's artifacts (its root when None)."""
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=folder)


def data_inputs(context: str, root: str | Path = ".") -> list[DatasetInput]:
    """The DVC-tracked data (raw fields, crops + manifest, split) as MLflow dataset inputs.

    Each carries its DVC hash as digest, so two runs that saw the same bytes show the same
    dataset; ``context`` ("train" or "test") says what the run used it for. Paths without a
    DVC hash yet (a run outside ``dvc repro``) are left out.
    """
    root = Path(root)
    hashes = dvc_hashes(root)
    inputs = []
    for name, path in DATASETS.items():
        digest = hashes.get(path)
        if digest is None:
            continue
        dataset = MetaDataset(LocalArtifactDatasetSource(str((root / path).resolve())), name, digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)]))
    return inputs


def log_data_inputs(client: MlflowClient, run_id: str, context: str, root: str | Path = ".") -> None:
    inputs = data_inputs(context, root)
    if not inputs:
        return
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # two processes registering the same new dataset at once (tuning workers): the loser's
        # insert hits the unique key; the dataset exists now, so once more links it
        time.sleep(0.5)
        client.log_inputs(run_id, datasets=inputs)


def dvc_hashes(root: str | Path = ".") -> dict[str, str]:
    """DVC md5 of ``data/raw`` (from ``data/raw.dvc``) and of every ``data/...`` stage output."""
    root = Path(root)
    hashes: dict[str, str] = {}
    raw = _read_yaml(root / RAW_DVC_FILE)
    for out in raw.get("outs", []) if isinstance(raw.get("outs"), list) else []:
        if isinstance(out, dict) and out.get("md5"):
            hashes[RAW_DIR.as_posix()] = str(out["md5"])
    lock = _read_yaml(root / DVC_LOCK_FILE)
    stages = lock.get("stages", {}) if isinstance(lock.get("stages"), dict) else {}
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            path = str(out.get("path", "")) if isinstance(out, dict) else ""
            if path.startswith("data/") and out.get("md5"):
                hashes[path] = str(out["md5"])
    return hashes


def lineage_tags(root: str | Path = ".") -> dict[str, str]:
    """Git commit and DVC data hashes of the working tree, for whatever of them exists.

    ``dvc.raw_md5`` comes from ``data/raw.dvc``; every ``data/...`` output recorded in
    ``dvc.lock`` (segment crops and manifest, split) adds ``dvc.md5:<path>``.
    """
    tags: dict[str, str] = {}
    commit = _git_commit(Path(root))
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    for path, digest in dvc_hashes(root).items():
        tags["dvc.raw_md5" if path == RAW_DIR.as_posix() else f"dvc.md5:{path}"] = digest
    return tags


def run_stamp(root: str | Path = ".") -> dict[str, str]:
    """Which code made a report, and when: the commit (``+dirty`` with uncommitted changes), UTC time.

    Published tables are generated from reports that carry this (scripts/results_tables.py), so a
    number can be traced to the commit that produced it.
    """
    commit = _git_commit(Path(root)) or "unknown"
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=False,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else False
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return {
        "commit": commit + ("+dirty" if dirty else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


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


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys, as MLflow params and DVC metrics show them."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_finite_number(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and abs(number) != float("inf")
