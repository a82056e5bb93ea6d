"""The train stage for one backbone: cross-validation, final fit, saved model and reports.

1. ``cross_validate`` on the split's folds of ``train_balanced`` (an MLflow child run per fold);
2. the operating threshold: highest one reaching ``train.target_sensitivity`` on the pooled
   out-of-fold predictions (never on the test set);
3. a final fit on all of ``train_balanced`` for the median best epoch of the folds;
4. ``models/<backbone>/model.pt`` + ``run.json``, ``reports/train/<backbone>.json`` (DVC
   metrics) and ``reports/train/<backbone>_oof.csv``. MLflow logging lives in
   :mod:`ctcid.model.run_log`; this module only calls its hooks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ctcid.config import MlflowParams, Params
from ctcid.contracts import read_manifest
from ctcid.model.backbones import CellClassifier, ModelSpec
from ctcid.model.cv import CVResult, cross_validate
from ctcid.model.dataset import LabelledCrops, Normalisation, load_labelled_crops
from ctcid.model.predict import MODEL_FILE, RUN_FILE, ModelInfo, save_model
from ctcid.model.run_log import TrainRunLog
from ctcid.model.trainer import EpochCallback, FitOptions, fit, resolve_device, seed_everything
from ctcid.paths import StageInputs
from ctcid.split import Split, read_split


@dataclass(frozen=True)
class TrainOutputs:
    cv: CVResult
    model_path: Path
    metrics_path: Path
    oof_path: Path
    run_id: str


def train_backbone(
    params: Params,
    backbone: str,
    inputs: StageInputs,
    models_dir: Path,
    reports_dir: Path,
    show_progress: bool = True,
) -> TrainOutputs:
    """Cross-validate ``backbone``, fit it on the whole balanced training set and save it."""
    config = params.train
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    split = read_split(inputs.split)
    manifest = read_manifest(inputs.manifest)
    rows, source = split.train_balanced, split.label_source
    data = load_labelled_crops(inputs.crops, manifest, rows, source, config.input_size)
    spec = ModelSpec(backbone, config.init, config.input_size, config.weights_dir)
    options = FitOptions.from_params(config, params.seed, class_weights(split))

    with TrainRunLog.start(params.mlflow, backbone, config.init) as log:
        log.params(run_params(params, split, len(data), backbone))
        with log.fold_logger() as logger:
            cv = cross_validate(
                data, split.folds, spec, options, config.target_sensitivity,
                observer=logger, device=device, show_progress=show_progress,
            )
        log.cv(cv)
        final_options = replace(options, epochs=cv.final_epochs)
        model, normalisation = final_fit(data, spec, final_options, device, log.final_epoch, show_progress)
        info = ModelInfo(
            backbone=backbone,
            init=config.init,
            input_size=config.input_size,
            channels=tuple(params.channels),
            normalisation=normalisation,
            threshold=cv.threshold,
            target_sensitivity=config.target_sensitivity,
            epochs=cv.final_epochs,
            seed=params.seed,
            cv=cv.mean,
        )
        model_path = save_model(models_dir / backbone / MODEL_FILE, model, info)
        write_run_file(models_dir / backbone / RUN_FILE, log.run_id, log.experiment_id, params.mlflow)
        metrics_path, oof_path = write_cv_reports(cv, reports_dir / "train", backbone)
        log.cv_artifacts(cv, oof_path)
    return TrainOutputs(cv, model_path, metrics_path, oof_path, log.run_id)


def class_weights(split: Split) -> list[float] | None:
    """All 1 after down-sampling; 'balance: class_weight' keeps every cell and weights the loss."""
    return split.class_weight_vector().tolist() if split.balance == "class_weight" else None


def final_fit(
    data: LabelledCrops,
    spec: ModelSpec,
    options: FitOptions,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    show_progress: bool = True,
) -> tuple[CellClassifier, Normalisation]:
    """The model on all of ``data`` for ``options.epochs`` (no validation, so no early stopping)."""
    seed_everything(options.seed)
    normalisation = Normalisation.fit(data.images)
    model = spec.build(normalisation)
    fitted = fit(
        model, data, None, options,
        on_epoch=on_epoch, device=device, description=f"{spec.backbone} final", show_progress=show_progress,
    )
    return fitted.model, normalisation


def run_params(params: Params, split: Split, train_size: int, backbone: str) -> dict[str, Any]:
    """What the parent run records as its params: the training config and the split it saw."""
    return {
        "backbone": backbone,
        "seed": params.seed,
        "channels": ",".join(params.channels),
        "train": params.train.model_dump(exclude={"backbones", "bootstrap"}),
        "split": {
            "by": split.by,
            "label_source": split.label_source,
            "balance": split.balance,
            "n_folds": len(split.folds),
            "train_balanced_size": train_size,
        },
    }


def write_run_file(path: Path, run_id: str, experiment_id: str, mlflow: MlflowParams) -> None:
    """``run.json`` beside the model: where evaluation and the registry find its MLflow run."""
    payload = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": mlflow.tracking_uri}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def write_cv_reports(cv: CVResult, folder: Path, backbone: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    metrics_path = folder / f"{backbone}.json"
    metrics_path.write_text(json.dumps(cv.summary(), indent=1) + "\n")
    oof_path = folder / f"{backbone}_oof.csv"
    cv.oof.to_csv(oof_path, index=False, float_format="%.6g")
    return metrics_path, oof_path
