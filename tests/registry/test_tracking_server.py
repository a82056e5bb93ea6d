"""The team profile end to end: train, register and promote through an MLflow server on PostgreSQL.

docs/scale-out.md describes the setup this test builds on one machine: a real ``mlflow server``
whose backend store is a throw-away database on the local PostgreSQL and whose artifacts go to a
folder standing in for object storage (``--artifacts-destination``, served over HTTP). The real
``ctcid`` command trains, evaluates, registers and promotes a tiny model with a params file that
names another (local SQLite) store; only ``CTCID_MLFLOW_TRACKING_URI`` in the environment points
it at the server, as CI's secrets do. Skipped only when PostgreSQL does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from mlflow import MlflowClient
from support import BACKBONE, MlflowServer, running_mlflow_server

from ctcid.config.loader import parse_params
from ctcid.paths import MODEL_FILE
from factory import POSTGRES, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BIN = Path(sys.executable).parent  # the installed commands, as a team runs them
MODEL_NAME = "ctcid-team-test"
EXPERIMENT = "ctcid-team-test"


@pytest.fixture
def tracking_server(postgres_database: str, tmp_path: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` as docs/scale-out.md starts it, on PostgreSQL and a free loopback port."""
    root = tmp_path / "server"
    root.mkdir()
    with running_mlflow_server(root, 90, f"postgresql+psycopg://{POSTGRES}/{postgres_database}") as server:
        yield server


def write_team_params(project: Path) -> tuple[Path, str]:
    """A tiny params file whose own tracking store is a local SQLite file (which must stay unused)."""
    tiny = tiny_params(project, [BACKBONE], epochs=1, patience=1, threads=1)
    base = tiny.model_dump(mode="json", by_alias=True)
    file_uri = f"sqlite:///{project / 'file-store.db'}"
    base["mlflow"] = {
        "tracking_uri": file_uri,
        "artifact_location": "local-mlruns",  # a plain folder: with a server, left to the server
        "experiment": EXPERIMENT,
        "model_name": MODEL_NAME,
    }
    # a gate any trained model passes: this test is about where things are stored, not the policy
    base["registry"] = {
        "min_sensitivity": 0.0, "min_specificity": 0.0, "max_patient_mae": 1000.0, "behaviour_checks": False,
    }
    parse_params(base)  # valid before any process reads it
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path, file_uri


def test_train_register_promote_through_a_tracking_server_on_postgresql(
    tracking_server: MlflowServer, postgres_database: str, synthetic_stage_inputs: dict[str, Path],
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    params_file, file_uri = write_team_params(project)
    uri = tracking_server.uri
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("CTCID_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))
    }
    environment.update({"CTCID_MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"})
    s = synthetic_stage_inputs
    inputs = ["--crops", str(s["crops"]), "--manifest", str(s["manifest"]), "--split", str(s["split"])]
    folders = ["--models", "models", "--reports", "reports"]
    raw = ["--raw", str(s["raw"])]
    steps = {
        "train": ["train", "--backbone", BACKBONE, *inputs, "--out", "models", "--reports", "reports"],
        "evaluate": ["evaluate", *folders, *inputs, *raw],
        "register": ["register", *folders, *inputs],
        "promote": ["promote", *inputs, *raw, "--record", "reports/promotion.json"],
        "show-params": ["show-params"],
    }
    out: dict[str, str] = {}
    for step, arguments in steps.items():
        done = subprocess.run(
            [str(BIN / "ctcid"), *arguments, "--params", str(params_file)],
            cwd=project, env=environment, capture_output=True, text=True, timeout=240, check=False,
        )
        out[step] = done.stdout + done.stderr
        assert done.returncode == 0, f"ctcid {step} exited {done.returncode}:\n{out[step][-4000:]}"
    assert "PROMOTED" in out["promote"], out["promote"]

    # the registry on the server holds the version, and the gate made it champion
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert [v.version for v in versions] == ["1"]
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == "1"
    assert {"champion", "challenger"} <= set(champion.aliases)

    # artifacts went over HTTP to the server's --artifacts-destination, not to a local folder
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert champion.source.startswith("models:/"), champion.source
    model_id = champion.source.removeprefix("models:/")  # the logged model (MLflow 3)
    assert tracking_server.stored_files(model_id, "MLmodel"), sorted(
        str(p.relative_to(tracking_server.artifacts)) for p in tracking_server.artifacts.rglob("*")
    )
    assert tracking_server.stored_files(model_id, MODEL_FILE)
    assert [p for p in tracking_server.artifacts.rglob("*") if champion.run_id in p.parts and p.is_file()]
    assert not (project / "local-mlruns").exists()
    assert not (project / "mlruns").exists()
    assert not (project / "file-store.db").exists()  # the params file's own store was never opened

    # the runs and the registry are rows in PostgreSQL
    with psycopg.connect(f"postgresql://{POSTGRES}/{postgres_database}", connect_timeout=5) as db:
        runs = db.execute(
            "SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "WHERE e.name = %s",
            (EXPERIMENT,),
        ).fetchone()
        model_versions = db.execute(
            "SELECT count(*) FROM model_versions WHERE name = %s", (MODEL_NAME,)
        ).fetchone()
        alias = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
            (MODEL_NAME,),
        ).fetchone()
    # the training run and one child per CV fold (the tiny split has 2)
    assert runs is not None and runs[0] >= 3, runs
    assert model_versions == (1,)
    assert alias == (1,)

    # show-params prints the file, never the deployment's URI from the environment
    assert uri not in out["show-params"]
    assert yaml.safe_load(out["show-params"])["mlflow"]["tracking_uri"] == file_uri
