"""The train stage for one backbone: cross-validation, final fit, saved model and reports.

1. ``cross_validate`` on the split's folds of ``train_balanced`` (an MLflow child run per fold);
2. the operating threshold: highest one reaching ``train.target_sensitivity`` on the pooled
   out-of-fold predictions (never on the test set);
3. a final fit on all of ``train_balanced`` for the median best epoch of the folds;
4. ``models/<backbone>/model.pt`` + ``run.json``, ``reports/train/<backbone>.json`` (DVC
   metrics) and ``reports/train/<backbone>_oof.csv``; all logged to the parent MLflow run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ctcid.backbones import build_classifier
from ctcid.config import Params
from ctcid.cv import CVResult, cross_validate
from ctcid.dataset import Normalisation, load_labelled_crops, read_manifest
from ctcid.plots import plot_confusion, plot_roc
from ctcid.predict import MODEL_FILE, RUN_FILE, ModelInfo, save_model
from ctcid.split import read_split
from ctcid.tracking import (
    MlflowFoldLogger,
    lineage_tags,
    log_artifacts,
    log_metrics,
    log_params,
    open_experiment,
    tracked_run,
)
from ctcid.trainer import EpochMetrics, fit, resolve_device, seed_everything

if TYPE_CHECKING:
    from mlflow import MlflowClient


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
    crops_path: Path,
    manifest_path: Path,
    split_path: Path,
    models_dir: Path,
    reports_dir: Path,
    show_progress: bool = True,
) -> TrainOutputs:
    config = params.train
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    split = read_split(split_path)
    manifest = read_manifest(manifest_path)
    data = load_labelled_crops(
        crops_path, manifest, split.train_balanced, split.label_source, config.input_size
    )
    # All 1 after down-sampling; 'balance: class_weight' keeps every cell and weights the loss.
    class_weights = split.class_weight_vector().tolist() if split.balance == "class_weight" else None

    client, experiment_id = open_experiment(params.mlflow)
    name = f"{backbone}-{config.init}"
    tags = {**lineage_tags(), "backbone": backbone, "init": config.init, "stage": "train"}
    with tracked_run(client, experiment_id, name, tags=tags) as run_id:
        log_params(
            client,
            run_id,
            {
                "backbone": backbone,
                "seed": params.seed,
                "channels": ",".join(params.channels),
                "train": config.model_dump(exclude={"backbones", "bootstrap"}),
                "split": {
                    "by": split.by,
                    "label_source": split.label_source,
                    "balance": split.balance,
                    "n_folds": len(split.folds),
                    "train_balanced_size": len(data),
                },
            },
        )
        with MlflowFoldLogger(client, experiment_id, run_id, name) as logger:
            cv = cross_validate(
                config,
                data,
                split.folds,
                backbone=backbone,
                seed=params.seed,
                class_weights=class_weights,
                observer=logger,
                device=device,
                show_progress=show_progress,
            )
        log_metrics(
            client,
            run_id,
            {
                "cv": cv.mean,
                "cv_std": cv.std,
                "oof": cv.oof_metrics().as_dict(),
                "threshold": cv.threshold,
                "final_epochs": cv.final_epochs,
            },
        )

        seed_everything(params.seed)
        normalisation = Normalisation.fit(data.images)
        model = build_classifier(backbone, normalisation, config.init, config.input_size, config.weights_dir)

        def log_final_epoch(metrics: EpochMetrics) -> None:
            log_metrics(client, run_id, {"final_train_loss": metrics.train_loss}, step=metrics.epoch)

        fitted = fit(
            model,
            data,
            None,
            config,
            seed=params.seed,
            epochs=cv.final_epochs,
            class_weights=class_weights,
            on_epoch=log_final_epoch,
            device=device,
            description=f"{backbone} final",
            show_progress=show_progress,
        )
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
        model_dir = models_dir / backbone
        model_path = save_model(model_dir / MODEL_FILE, fitted.model, info)
        (model_dir / RUN_FILE).write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "tracking_uri": params.mlflow.tracking_uri,
                },
                indent=1,
            )
            + "\n"
        )
        metrics_path, oof_path = _write_reports(cv, reports_dir / "train", backbone)
        _log_cv_artifacts(client, run_id, cv, oof_path, backbone)
    return TrainOutputs(cv, model_path, metrics_path, oof_path, run_id)


def _write_reports(cv: CVResult, folder: Path, backbone: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    metrics_path = folder / f"{backbone}.json"
    metrics_path.write_text(json.dumps(cv.summary(), indent=1) + "\n")
    oof_path = folder / f"{backbone}_oof.csv"
    cv.oof.to_csv(oof_path, index=False, float_format="%.6g")
    return metrics_path, oof_path


def _log_cv_artifacts(client: MlflowClient, run_id: str, cv: CVResult, oof_path: Path, backbone: str) -> None:
    oof = cv.oof
    with tempfile.TemporaryDirectory() as tmp:
        roc = plot_roc(
            {f"{backbone} out-of-fold": (oof["y_true"], oof["y_score"])},
            Path(tmp) / "cv_roc.png",
            title=f"{backbone} cross-validation ROC",
        )
        confusion = plot_confusion(
            cv.oof_metrics(),
            Path(tmp) / "cv_confusion.png",
            title=f"{backbone} out-of-fold, threshold {cv.threshold:.3g}",
        )
        log_artifacts(client, run_id, [roc, confusion], "plots")
    log_artifacts(client, run_id, [oof_path], "predictions")
