"""The register stage: the selected backbone's model becomes a version of the registered model.

1. the backbone ``reports/metrics.json`` selected (on CV AUC), its ``model.pt`` and training run;
2. the model card and the gallery of test disagreements are written (the stage's outputs);
3. if a version with the same ``model.pt`` content hash exists, it is reused (a second
   ``dvc repro`` or re-run registers nothing new) and only the ``challenger`` alias is set;
   else the model is logged as an MLflow pyfunc (:mod:`.pyfunc`) into the training run with a
   signature and input example, registered with its tags and description (:mod:`.metadata`), and
   aliased ``challenger``;
4. ``reports/registration.json`` records what was registered (the promote stage's input).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ctcid.config.drift import DriftParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.segment import SegmentParams
from ctcid.config.split import SplitParams
from ctcid.config.stage import StageConfig
from ctcid.config.train import TrainParams
from ctcid.config.tune import TuneParams
from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError
from ctcid.evaluation.drift import read_reference
from ctcid.intensity import manifest_levels, model_input
from ctcid.model.predict import ModelInfo, load_model
from ctcid.paths import (
    CARD_FILE,
    DRIFT_REFERENCE_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REGISTRATION_FILE,
    RUN_FILE,
    TEST_PREDICTIONS_FILE,
    StageInputs,
)
from ctcid.registry import card, gallery, metadata
from ctcid.registry.pyfunc import (
    CARD_ARTIFACT,
    MODEL_ARTIFACT,
    MODEL_CODE,
    file_sha256,
    pip_requirements,
    signature,
)
from ctcid.registry.store import HASH_TAG, Registry
from ctcid.registry_client import CHALLENGER, CHAMPION, use_registry
from ctcid.split import read_split

EXAMPLE_CROPS = 2  # crops in the logged input example


class RegisterConfig(StageConfig):
    """What the register stage reads: what the served model carries (segment, channels), the
    settings that shaped it (their hash tags the version) and the registered model's name."""

    seed: int
    channels: list[str]
    segment: SegmentParams
    split: SplitParams
    train: TrainParams
    tune: TuneParams
    drift: DriftParams
    mlflow: MlflowParams


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    backbone: str
    run_id: str
    model_sha256: str
    model_uri: str
    reused: bool  # True: this model file was registered before, nothing new was logged

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path


def register_selected(
    params: RegisterConfig, inputs: StageInputs, models_dir: Path, reports_dir: Path
) -> Registration:
    """Register the backbone evaluate selected and alias it ``challenger``."""
    params = RegisterConfig.project(params)  # whatever the caller holds, registering reads only its keys
    report = metadata.read_metrics(reports_dir / METRICS_FILE)
    backbone = report["selected"]
    model_path = models_dir / backbone / MODEL_FILE
    loaded = load_model(model_path)  # a file that does not load is refused before the registry is touched
    run_id = training_run(models_dir / backbone / RUN_FILE)
    sha256 = file_sha256(model_path)
    registry = Registry(params.mlflow)
    existing = registry.find_by_hash(sha256)
    if existing is None:
        registry.call(f"finding training run {run_id}", lambda: registry.client.get_run(run_id))
    crops = open_crops(inputs.crops)
    manifest = read_manifest(inputs.manifest)
    facts = metadata.collect(
        params,
        backbone,
        loaded.info,
        int(crops.shape[-1]),
        run_id,
        sha256,
        report,
        manifest,
        read_split(inputs.split).label_source,
    )
    # the card and gallery are the stage's outputs, which DVC deletes before a re-run: a reused
    # version writes them again too (from today's test set)
    picture = _gallery(reports_dir, crops, params.channels, backbone, loaded.info.threshold)
    card_path = card.write(facts, reports_dir / CARD_FILE, picture)
    if existing is not None:
        registry.set_alias(CHALLENGER, existing.version)
        registration = Registration(
            registry.name,
            str(existing.version),
            backbone,
            existing.run_id or run_id,
            sha256,
            registry.model_uri(str(existing.version)),
            reused=True,
        )
        return _recorded(registration, reports_dir)

    # an example of what the logged model reads: standardised crops for a standardising model
    levels = manifest_levels(manifest, params.channels).rows(np.arange(min(EXAMPLE_CROPS, len(crops))))
    example = model_input(crops[:EXAMPLE_CROPS], levels, loaded.info.standardise)
    version = _log_and_register(
        registry,
        facts,
        model_path,
        card_path,
        picture,
        example,
        serving_metadata(params, report, reports_dir / DRIFT_REFERENCE_FILE, loaded.info),
    )
    registry.set_alias(CHALLENGER, version)
    registration = Registration(
        registry.name, version, backbone, run_id, sha256, registry.model_uri(version), reused=False
    )
    return _recorded(registration, reports_dir)


def serving_metadata(
    params: RegisterConfig, report: dict[str, Any], drift_reference: Path, info: ModelInfo | None = None
) -> dict[str, Any]:
    """What the service needs beside the network: the segmentation that made its training crops
    (a field must be cut the same way), the selected model's own per-patient counting threshold (the
    one evaluate counted its test patients at, :func:`.metadata.counting_threshold`) and where the
    training fields lie (to flag a field unlike them; evaluate's reference, absent without raw fields)."""
    values: dict[str, Any] = {
        "segment": params.segment.model_dump(mode="json"),
        "channels": list(params.channels),
        "counting_threshold": metadata.counting_threshold(report, report["selected"], info),
    }
    reference = read_reference(drift_reference) if drift_reference.is_file() else None
    if reference is not None:
        values["drift"] = reference.model_dump(mode="json")
    return values


def training_run(run_file: Path) -> str:
    try:
        return str(json.loads(run_file.read_text())["run_id"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise CtcidError(
            f"{run_file}: no training run recorded; run 'ctcid train' for this backbone (dvc repro)"
        ) from None


def _gallery(
    reports_dir: Path, crops: np.ndarray, channels: list[str], backbone: str, threshold: float
) -> Path | None:
    table = reports_dir / TEST_PREDICTIONS_FILE
    if not table.is_file():
        return None
    predictions = pd.read_csv(table)
    if backbone not in predictions.columns:
        return None
    return gallery.draw(reports_dir / card.GALLERY, predictions, crops, channels, backbone, threshold)


def _log_and_register(
    registry: Registry,
    facts: metadata.VersionFacts,
    model_path: Path,
    card_path: Path,
    picture: Path | None,
    example: np.ndarray,
    serving: dict[str, Any],
) -> str:
    """Log the pyfunc into the training run, register it linked to run and logged model."""
    use_registry(registry.params)
    artifacts = {MODEL_ARTIFACT: str(model_path), CARD_ARTIFACT: str(card_path)}
    with mlflow.start_run(run_id=facts.run_id):  # resumes the finished training run, ends it again
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=signature(len(facts.info.channels), facts.crop_size),
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={
                "ctcid": {
                    **facts.info.to_dict(),
                    "crop_size": facts.crop_size,
                    HASH_TAG: facts.model_sha256,
                    **serving,
                }
            },
            tags={"backbone": facts.backbone, HASH_TAG: facts.model_sha256},
        )
        mlflow.log_artifact(str(card_path), "model_card")
        if picture is not None:
            mlflow.log_artifact(str(picture), "model_card")
    tags = facts.tags()
    version = registry.call(
        f"registering a version of {registry.name!r}",
        lambda: mlflow.register_model(info.model_uri, registry.name, tags=tags),
    )
    registry.call(
        "describing the version",
        lambda: registry.client.update_model_version(registry.name, version.version, facts.description()),
    )
    if not registry.call(
        "reading the model", lambda: registry.client.get_registered_model(registry.name)
    ).description:
        registry.call(
            "describing the model",
            lambda: registry.client.update_registered_model(
                registry.name,
                f"CTC classifier of ctcid (imFISH crops in, CTC probability out). Aliases: '{CHAMPION}' is "
                f"in use, '{CHALLENGER}' the newest candidate; 'ctcid promote' moves {CHAMPION} through the "
                "gate (docs/registry.md).",
            ),
        )
    return str(version.version)


def _recorded(registration: Registration, reports_dir: Path) -> Registration:
    registration.write(reports_dir / REGISTRATION_FILE)
    return registration
