"""The train stage for one backbone: cross-validation, final fit, saved model and reports.

0. ``train.*``, with the tuned values of ``reports/tune/<backbone>.json`` when given (the tune
   stage); when that report carries the best trial's cross-validation of exactly this
   configuration and data (same fingerprint), its out-of-fold predictions are reused instead of
   training the same five folds again (same seeds, same bytes on the same CPU);
1. otherwise ``cross_validate`` on the split's folds (an MLflow child run per fold);
2. the operating threshold: highest one reaching ``train.target_sensitivity`` on the pooled
   out-of-fold predictions (never on the test set); the counting threshold: fewest per-patient
   count errors over the training patients' out-of-fold predictions (:mod:`.count_threshold`);
3. a final fit on all training crops that ``train.negatives`` uses, for the median best epoch of
   the folds;
4. ``models/<backbone>/model.pt`` + ``run.json``, ``reports/train/<backbone>.json`` (DVC
   metrics) and ``reports/train/<backbone>_oof.csv``. MLflow logging lives in
   :mod:`ctcid.model.run_log`; this module only calls its hooks.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ctcid.config.base import redact_url
from ctcid.config.mlflow import MlflowParams
from ctcid.config.segment import SegmentParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.train import TrainParams, TrainRecipe, with_values
from ctcid.contracts import Negatives, open_crops, read_manifest
from ctcid.errors import CtcidError
from ctcid.metrics import binary_metrics
from ctcid.model.backbones import CellClassifier, ModelSpec, model_input_size, spot_config
from ctcid.model.count_threshold import CountChoice, count_threshold
from ctcid.model.counterfactual import counterfactual_source
from ctcid.model.cv import OOF_FLOAT_FORMAT, CVResult, ExtendCrops, FoldResult, cross_validate
from ctcid.model.dataset import (
    LabelledCrops,
    Normalisation,
    fit_normalisation,
    input_levels,
    load_labelled_crops,
)
from ctcid.model.predict import ModelInfo, save_model
from ctcid.model.run_log import TrainRunLog
from ctcid.model.spot_layer import SPOT_KEYS
from ctcid.model.trainer import EpochCallback, FitOptions, fit, resolve_device, seed_everything
from ctcid.model.transfer import TRAIN_SAMPLES_ARTIFACT, find_champion, write_train_samples
from ctcid.paths import MODEL_FILE, RUN_FILE, TRAIN_REPORTS, StageInputs, backbone_oof, backbone_report
from ctcid.split import Split, read_split

_CHUNK = 1 << 20

# the crop side the models are fed (input_size: native) and the CD45 call that marks hard negatives
# and stands in for a missing CD45 annotation; the rest of segment.* made the crops
# and, for train.spot_features, the nucleus and spot detection its spot layer repeats on each crop
CropSize = view(SegmentParams, "crop_size", "cd45_threshold", *SPOT_KEYS)


class TrainConfig(StageConfig):
    """What the train stage reads (and, with the tune section, the tune stage)."""

    seed: int
    channels: list[str]
    segment: CropSize
    train: TrainRecipe
    mlflow: MlflowParams  # model_name: train.init 'registry' fine-tunes <model_name>@champion


@dataclass(frozen=True)
class TrainOutputs:
    cv: CVResult
    model_path: Path
    metrics_path: Path
    oof_path: Path
    run_id: str
    counting: CountChoice | None = None


def summary_line(backbone: str, outputs: TrainOutputs) -> str:
    """What ``ctcid train`` prints: CV metrics at 0.5, the two thresholds, the final fit."""
    cv, mean = outputs.cv, outputs.cv.mean
    counting = outputs.counting
    count = "" if counting is None else (
        f"counting threshold {counting.threshold:.4g} (out-of-fold count MAE {counting.mae:.2f}); "
    )
    return (
        f"{backbone}: CV AUC {mean['auc']:.4f}, sensitivity {mean['sensitivity']:.3f}, specificity "
        f"{mean['specificity']:.3f} (threshold 0.5); operating threshold {cv.threshold:.4g}; {count}"
        f"final fit {cv.final_epochs} epochs -> {outputs.model_path} (MLflow run {outputs.run_id})"
    )


def train_backbone(
    params: TrainConfig,
    backbone: str,
    inputs: StageInputs,
    models_dir: Path,
    reports_dir: Path,
    show_progress: bool = True,
    tuned: Path | None = None,
) -> TrainOutputs:
    """Cross-validate ``backbone`` (or reuse its tuned CV), fit it on all its training crops, save it."""
    params = TrainConfig.project(params)  # whatever the caller holds, training reads only its keys
    report = read_tune_report(tuned) if tuned is not None else None
    config = tuned_train(params, report)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    split = read_split(inputs.split)
    manifest = read_manifest(inputs.manifest)
    levels = input_levels(manifest, params.channels, config.standardise)
    data = load_labelled_crops(
        inputs.crops, manifest, split.train, split.label_source, read_size(config, params), levels,
        params.segment.cd45_threshold,
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec = model_spec(params, config, backbone, split, manifest, Path(tmp))
        options = FitOptions.from_params(config, params.seed, params.channels)
        extend = counterfactual_source(open_crops(inputs.crops), manifest, levels, params, config)
        fingerprint = cv_fingerprint(config, params.seed, data_digest(inputs), spec, device)
        reused = reused_cv(report, fingerprint, backbone, config) if report else None
        with TrainRunLog.start(params.mlflow, backbone, config.init) as log:
            log.params(run_params(params, config, split, len(data), backbone))
            if report is not None:
                log.tuned_by(report)
            if reused is not None:
                cv = reused
                log.reused_cv(str(report["best"]["mlflow_run_id"]), int(report["best"]["number"]))  # type: ignore[index]
            else:
                with log.fold_logger() as logger:
                    cv = cross_validate(
                        data, split.folds, spec, options, config.target_sensitivity,
                        observer=logger, device=device, show_progress=show_progress, extend=extend,
                    )
            log.cv(cv)
            counting = oof_count_threshold(cv, manifest)
            log.counting(counting)
            final = data.subset(training_rows(split, config.negatives))
            final_options = replace(options, epochs=cv.final_epochs)
            model, normalisation = final_fit(
                final, spec, final_options, device, log.final_epoch, show_progress, extend
            )
            info = ModelInfo(
                backbone=backbone,
                init=config.init,
                input_size=read_size(config, params),
                channels=tuple(params.channels),
                normalisation=normalisation,
                threshold=cv.threshold,
                target_sensitivity=config.target_sensitivity,
                epochs=cv.final_epochs,
                seed=params.seed,
                cv={**cv.mean, **{f"objective.{k}": v for k, v in cv.summary()["objective"].items()}},
                standardise=config.standardise,
                count_threshold=counting.threshold,
                stem=config.stem,
                spots=spec.spots,
            )
            model_path = save_model(models_dir / backbone / MODEL_FILE, model, info)
            write_run_file(models_dir / backbone / RUN_FILE, log.run_id, log.experiment_id, params.mlflow)
            metrics_path, oof_path = write_cv_reports(
                cv, reports_dir / TRAIN_REPORTS, backbone, counting
            )
            log.cv_artifacts(cv, oof_path)
            samples_file = Path(tmp) / Path(TRAIN_SAMPLES_ARTIFACT).name
            write_train_samples(samples_file, train_samples(split, manifest))
            log.artifact(samples_file, str(Path(TRAIN_SAMPLES_ARTIFACT).parent))
    return TrainOutputs(cv, model_path, metrics_path, oof_path, log.run_id, counting)


def oof_count_threshold(cv: CVResult, manifest: pd.DataFrame) -> CountChoice:
    """The counting threshold from ``cv``'s out-of-fold predictions, grouped by the manifest's patients."""
    oof = cv.oof
    patients = manifest["sample"].astype(str).to_numpy()[oof["crop_index"].to_numpy()]
    return count_threshold(oof, patients, operating=cv.threshold)


def training_rows(split: Split, negatives: Negatives) -> np.ndarray:
    """The paper's down-sampled set for ``downsample``; every training cell otherwise."""
    return split.train_balanced if negatives == "downsample" else split.train


def read_size(config: TrainParams, params: TrainConfig) -> int:
    """The side of the crops the model reads (``backbones.model_input_size``)."""
    return model_input_size(config.input_size, params.segment.crop_size, config.spot_features)


def train_samples(split: Split, manifest: pd.DataFrame) -> list[str]:
    return sorted(manifest["sample"].astype(str).iloc[split.train].unique().tolist())


def test_samples(split: Split, manifest: pd.DataFrame) -> list[str]:
    return sorted(manifest["sample"].astype(str).iloc[split.test].unique().tolist())


def model_spec(
    params: TrainConfig,
    config: TrainParams,
    backbone: str,
    split: Split,
    manifest: pd.DataFrame,
    folder: Path,
) -> ModelSpec:
    """The network to build; ``init: registry`` downloads the champion into ``folder`` first."""
    start_from = None
    if config.init == "registry":
        champion = find_champion(params.mlflow, backbone, test_samples(split, manifest), folder)
        start_from = str(champion.path)
    return ModelSpec(
        backbone, config.init, read_size(config, params), config.weights_dir, start_from, config.stem,
        spot_config(params.channels, params.segment, config.spot_features, config.input_size),
    )


# --- tuned values ----------------------------------------------------------------------------------


def read_tune_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise CtcidError(
            f"{path}: cannot read the tune report ({error.strerror}); run 'ctcid tune'"
        ) from None
    except json.JSONDecodeError as error:
        raise CtcidError(f"{path}: not valid JSON ({error}); re-run 'ctcid tune'") from None


def tuned_train(params: TrainConfig, report: dict[str, Any] | None) -> TrainParams:
    """``train.*`` with the best trial's values of a tune report (``train.*`` alone without one)."""
    best = (report or {}).get("best")
    if not best:
        return params.train
    return with_values(params.train, dict(best["values"]), params.segment.crop_size)


def data_digest(inputs: StageInputs) -> str:
    """sha256 over the crops, manifest and split: the data a cross-validation saw."""
    digest = hashlib.sha256()
    for path in (inputs.crops, inputs.manifest, inputs.split):
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def cv_fingerprint(
    config: TrainParams, seed: int, data_sha256: str, spec: ModelSpec, device: torch.device
) -> str:
    """What makes two cross-validations the same: every setting that changes a fold's weights."""
    start_from = None
    if spec.start_from is not None:
        start_from = hashlib.sha256(Path(spec.start_from).read_bytes()).hexdigest()
    settings = {
        "train": config.model_dump(exclude={"backbones", "bootstrap", "target_sensitivity"}),
        "backbone": spec.backbone,
        "seed": seed,
        "data": data_sha256,
        "start_from": start_from,
        "device": device.type,  # train.device 'auto' means different arithmetic on CPU and CUDA
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def reused_cv(
    report: dict[str, Any], fingerprint: str, backbone: str, config: TrainParams
) -> CVResult | None:
    """The best trial's cross-validation from the tune report, if it is exactly this one."""
    best = report.get("best") or {}
    oof_file = report.get("oof_file")
    if best.get("fingerprint") != fingerprint or not oof_file or not Path(oof_file).is_file():
        return None
    oof = pd.read_csv(oof_file)
    epochs = best["cv"]["folds"]
    folds = []
    for number, rows in oof.groupby("fold", sort=True):
        y_true, y_score = rows["y_true"].to_numpy(), rows["y_score"].to_numpy()
        folds.append(
            FoldResult(
                fold=int(number),
                best_epoch=int(epochs[f"fold_{int(number)}"]["best_epoch"]),
                metrics=binary_metrics(y_true, y_score, 0.5),
                history=(),
                crop_index=rows["crop_index"].to_numpy(),
                y_true=y_true,
                y_score=y_score,
            )
        )
    return CVResult(backbone, config.init, tuple(folds), config.target_sensitivity)


def final_fit(
    data: LabelledCrops,
    spec: ModelSpec,
    options: FitOptions,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    show_progress: bool = True,
    extend: ExtendCrops | None = None,
) -> tuple[CellClassifier, Normalisation]:
    """The model on all of ``data`` for ``options.epochs`` (no validation, so no early stopping).

    ``extend`` appends the fit's counterfactuals, made from ``data`` as each fold's are."""
    if extend is not None:
        data = extend(data, options.seed)
    seed_everything(options.seed, options.deterministic, device)
    normalisation = fit_normalisation(data, device)
    model = spec.build(normalisation)
    fitted = fit(
        model, data, None, options,
        on_epoch=on_epoch, device=device, description=f"{spec.backbone} final", show_progress=show_progress,
    )
    return fitted.model, normalisation


def run_params(
    params: TrainConfig, config: TrainParams, split: Split, train_size: int, backbone: str
) -> dict[str, Any]:
    """What the parent run records as its params: the (tuned) training config and the split it saw."""
    return {
        "backbone": backbone,
        "seed": params.seed,
        "channels": ",".join(params.channels),
        "train": config.model_dump(exclude={"backbones", "bootstrap"}),
        "split": {
            "by": split.by,
            "label_source": split.label_source,
            "n_folds": len(split.folds),
            "train_size": train_size,
            "train_balanced_size": len(split.train_balanced),
        },
    }


def write_run_file(path: Path, run_id: str, experiment_id: str, mlflow: MlflowParams) -> None:
    """``run.json`` beside the model: where evaluation and the registry find its MLflow run."""
    # a password in the URI must not reach a DVC output (pushed to the remote); readers use params
    uri = redact_url(mlflow.tracking_uri)
    payload = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def write_cv_reports(
    cv: CVResult, folder: Path, backbone: str, counting: CountChoice | None = None
) -> tuple[Path, Path]:
    """``<backbone>.json`` (the CV summary, with ``count_threshold`` and ``count_oof_mae`` when
    ``counting`` is given) and ``<backbone>_oof.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics_path = backbone_report(folder, backbone)
    summary = cv.summary()
    if counting is not None:
        summary.update(
            count_threshold=counting.threshold,
            count_oof_mae=counting.mae,
            count_oof_mae_at_operating=counting.mae_at_operating,
            count_oof_mae_at_half=counting.mae_at_half,
            count_patients=counting.n_patients,
        )
    metrics_path.write_text(json.dumps(summary, indent=1) + "\n")
    oof_path = backbone_oof(folder, backbone)
    cv.oof.to_csv(oof_path, index=False, float_format=OOF_FLOAT_FORMAT)
    return metrics_path, oof_path
