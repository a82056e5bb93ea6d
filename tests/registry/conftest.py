"""A real ``mlflow server`` on a loopback port, and two trained models to register through it.

The server (SQLite backend store, a temporary artifact folder, artifacts served over HTTP) and the
models are made once per session; each test registers under its own model name, so tests never
see each other's versions or aliases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support import BACKBONE, Candidate, MlflowServer, running_mlflow_server, server_params

from ctcid.contracts import read_manifest
from ctcid.evaluation.evaluate import evaluate_models
from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import LabelledCrops, Normalisation, load_labelled_crops
from ctcid.model.predict import ModelInfo, save_model
from ctcid.model.train import train_backbone, write_run_file
from ctcid.model.trainer import FitOptions, fit, seed_everything
from ctcid.paths import MODEL_FILE, RUN_FILE, StageInputs
from ctcid.split import read_split
from ctcid.tracking import open_experiment
from factory import INPUT_SIZE


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server


@pytest.fixture(scope="session")
def stage_inputs(synthetic_stage_inputs: dict[str, Path]) -> StageInputs:
    s = synthetic_stage_inputs
    return StageInputs(s["crops"], s["manifest"], s["split"])


@pytest.fixture(scope="session")
def raw_dir(synthetic_stage_inputs: dict[str, Path]) -> Path:
    return synthetic_stage_inputs["raw"]


@pytest.fixture(scope="session")
def good_model(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer, stage_inputs: StageInputs,
    raw_dir: Path,
) -> Candidate:
    """AlexNet trained by the real train stage (tracked on the server) and evaluated."""
    root = tmp_path_factory.mktemp("good")
    params = server_params(mlflow_server.uri, "unused")
    torch.set_num_threads(1)
    train_backbone(params, BACKBONE, stage_inputs, root / "models", root / "reports", show_progress=False)
    evaluate_models(params, stage_inputs, root / "models", root / "reports", raw_dir)
    return Candidate(root / "models", root / "reports")


@pytest.fixture(scope="session")
def bad_model(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer, stage_inputs: StageInputs,
    raw_dir: Path,
) -> Candidate:
    """A deliberately worse challenger: three epochs on flipped labels, in a run of its own."""
    root = tmp_path_factory.mktemp("bad")
    params = server_params(mlflow_server.uri, "unused")
    torch.set_num_threads(1)
    split = read_split(stage_inputs.split)
    manifest = read_manifest(stage_inputs.manifest)
    data = load_labelled_crops(stage_inputs.crops, manifest, split.train_balanced, "truth", INPUT_SIZE)
    # flipped labels: on crops this easy even shuffled labels can leave a network that separates
    # the classes by chance; a network taught the opposite is worse for certain
    data = LabelledCrops(data.pixels, 1 - data.labels, data.crop_index)
    seed_everything(0)
    normalisation = Normalisation.fit(data.images)
    spec = ModelSpec(BACKBONE, input_size=INPUT_SIZE)
    options = FitOptions(3, 3, 16, 1e-3, 1e-4, False, 0.0, 0)
    model = fit(spec.build(normalisation), data, None, options, show_progress=False).model
    info = ModelInfo(
        BACKBONE, "scratch", INPUT_SIZE, tuple(params.channels), normalisation, 0.5, 0.97, 1, 0, {"auc": 0.5}
    )
    save_model(root / "models" / BACKBONE / MODEL_FILE, model, info)
    client, experiment_id = open_experiment(params.mlflow)
    run_id = client.create_run(experiment_id, run_name="flipped-labels").info.run_id
    client.set_terminated(run_id, "FINISHED")
    write_run_file(root / "models" / BACKBONE / RUN_FILE, run_id, experiment_id, params.mlflow)
    evaluate_models(params, stage_inputs, root / "models", root / "reports", raw_dir)
    return Candidate(root / "models", root / "reports")


@pytest.fixture
def model_name() -> str:
    return f"ctcid-test-{uuid.uuid4().hex[:8]}"
