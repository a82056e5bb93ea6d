"""Fine-tuning from the registry: which champions are refused, and why, in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from ctcid.config.mlflow import MlflowParams
from ctcid.errors import CtcidError
from ctcid.model.backbones import ModelSpec, load_trained_weights
from ctcid.model.dataset import Normalisation
from ctcid.model.predict import ModelInfo, save_model
from ctcid.model.transfer import TRAIN_SAMPLES_ARTIFACT, NoChampion, find_champion, write_train_samples

NORM = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def saved(path: Path, backbone: str) -> Path:
    model = ModelSpec(backbone, "scratch", 16).build(NORM)
    info = ModelInfo(backbone, "scratch", 16, ("DAPI", "CEP8", "CD45"), NORM, 0.5, 0.97, 1, 0)
    return save_model(path, model, info)


def champion(tmp_path: Path, backbone: str, samples: list[str] | None) -> MlflowParams:
    """A registered champion of ``backbone`` whose run recorded ``samples`` (None: nothing)."""
    params = MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="m")
    client = MlflowClient(params.tracking_uri, params.tracking_uri)
    experiment = client.create_experiment("e", (tmp_path / "mlruns").as_uri())
    run = client.create_run(experiment).info.run_id
    if samples is not None:
        client.log_artifact(run, str(write_train_samples(tmp_path / "train_samples.json", samples)),
                            str(Path(TRAIN_SAMPLES_ARTIFACT).parent))
    client.log_artifact(run, str(saved(tmp_path / "model" / "model.pt", backbone)), "model")
    client.create_registered_model("m")
    version = client.create_model_version("m", f"runs:/{run}/model", run, tags={"backbone": backbone,
                                                                               "training_run_id": run})
    client.set_registered_model_alias("m", "champion", version.version)
    return params


def test_a_champion_that_trained_on_a_test_patient_is_refused_by_name(tmp_path: Path) -> None:
    params = champion(tmp_path, "alexnet", ["S0001", "S0002"])
    with pytest.raises(NoChampion, match=r"trained on 1 of today's test patients \(S0002\)"):
        find_champion(params, "alexnet", ["S0002", "S0009"], tmp_path / "down")
    found = find_champion(params, "alexnet", ["S0009"], tmp_path / "down")
    assert found.path.name == "model.pt" and found.backbone == "alexnet"


def test_a_lab_whose_names_collide_with_the_champions_is_told_to_rename_them(tmp_path: Path) -> None:
    # a lab's folder numbered like the simulator's training cohort: the check sees names, not patients
    params = champion(tmp_path, "alexnet", [f"S{k:04d}" for k in range(10)])
    with pytest.raises(NoChampion) as refused:
        find_champion(params, "alexnet", ["S0001", "S0004", "P-17"], tmp_path / "down")
    message = str(refused.value)
    assert "trained on 2 of today's test patients (S0001, S0004)" in message
    assert "rename their sample folders to unique patient IDs" in message and "train.init" in message


def test_another_backbone_or_unrecorded_patients_are_refused(tmp_path: Path) -> None:
    params = champion(tmp_path / "a", "alexnet", ["S0001"])
    with pytest.raises(NoChampion, match="is a alexnet model, not resnet18"):
        find_champion(params, "resnet18", [], tmp_path / "down")
    unrecorded = champion(tmp_path / "b", "alexnet", None)
    with pytest.raises(NoChampion, match="does not record its training patients"):
        find_champion(unrecorded, "alexnet", [], tmp_path / "down2")


def test_weights_of_another_backbone_do_not_load(tmp_path: Path) -> None:
    model = ModelSpec("resnet18", "scratch", 16).build(NORM)
    with pytest.raises(CtcidError, match="holds a alexnet model; fine-tuning resnet18 needs a resnet18"):
        load_trained_weights(model, "resnet18", saved(tmp_path / "model.pt", "alexnet"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    with pytest.raises(CtcidError, match="not a ctcid model file to start from"):
        load_trained_weights(model, "resnet18", broken)
