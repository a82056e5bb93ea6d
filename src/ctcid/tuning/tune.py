"""The tune stage for one backbone: an Optuna study under the split's CV folds, then its report.

1. the study (``tuning.study``): created, or resumed where an earlier run or another worker left
   it; a new study starts with the untuned ``train.*`` values as trial 0;
2. trials (``tuning.objective``) until ``tune.n_trials`` trials of the study are finished
   (complete or pruned, counting every worker) or ``tune.timeout_s`` is spent;
3. ``reports/tune/<backbone>.json``: the best trial's values (what ``train`` applies), its CV
   summary and fingerprint, the baseline trial and the gain over it; the best trial's out-of-fold
   predictions in ``<backbone>_oof.csv`` (``train`` reuses them); Optuna's figures in
   ``reports/tune/figures/`` and in the study's MLflow run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from ctcid.config import Dimension, Params
from ctcid.contracts import read_manifest
from ctcid.errors import CtcidError
from ctcid.model.backbones import ModelSpec, weights_path
from ctcid.model.train import cv_fingerprint, data_digest, test_samples, tuned_train
from ctcid.model.trainer import resolve_device
from ctcid.model.transfer import Champion, NoChampion, find_champion
from ctcid.paths import StageInputs
from ctcid.split import Split, read_split
from ctcid.tuning import study as studies
from ctcid.tuning.figures import write_figures
from ctcid.tuning.objective import Objective, TrialData
from ctcid.tuning.run_log import RUN_ATTR, StudyRunLog
from ctcid.tuning.space import available_space, baseline

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]
OOF_COLUMNS = ("crop_index", "fold", "y_true", "y_score")  # CVResult.oof


@dataclass
class TuneOutcome:
    report_path: Path
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def tune_backbone(
    params: Params,
    backbone: str,
    inputs: StageInputs,
    reports_dir: Path,
    *,
    worker: int = 0,
    on_trial: TrialCallback | None = None,
) -> TuneOutcome:
    """Run (or resume) ``backbone``'s study to ``tune.n_trials`` and write its report."""
    tune, train = params.tune, params.train
    if train.threads:
        torch.set_num_threads(train.threads)
    started = time.monotonic()
    device = resolve_device(train.device)
    split, manifest = read_split(inputs.split), read_manifest(inputs.manifest)
    data_sha = data_digest(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        champion, init_reasons = init_availability(params, backbone, split, manifest, Path(tmp))
        space, notes = available_space(tune.space, init_reasons)
        settings = study_settings(params, space, champion)
        name = studies.study_name(tune.study_prefix, backbone, data_sha, studies.config_digest(settings))
        storage = studies.open_storage(tune)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=studies.sampler(tune, params.seed, worker),
            pruner=studies.pruner(tune, len(split.folds)),
            load_if_exists=True,
        )
        if tune.baseline_trial and not study.trials:
            study.enqueue_trial(
                baseline(train, space, params.segment.crop_size), user_attrs={"baseline": True}
            )
        tags = {"optuna.storage": studies.redact(tune.storage), "tune.objective": tune.objective}
        with StudyRunLog.open(params.mlflow, study, backbone, tags) as log:
            remaining = tune.n_trials - len(studies.finished(study))
            if remaining > 0:
                objective = Objective(
                    params, backbone, space, TrialData(inputs.crops, manifest, split), log,
                    deadline=started + (tune.timeout_s or float("inf")), device=device,
                    start_from=str(champion.path) if champion else None,
                )
                callbacks: list[TrialCallback] = [MaxTrialsCallback(tune.n_trials, states=studies.FINISHED)]
                if on_trial is not None:
                    callbacks.append(on_trial)
                study.optimize(
                    objective,
                    n_trials=remaining,
                    timeout=tune.timeout_s,
                    catch=(CtcidError,),
                    callbacks=callbacks,
                    gc_after_trial=True,
                )
            best = studies.best_trial(study)
            figure_dir = reports_dir / "tune" / "figures" / backbone
            figures, figure_notes = write_figures(study, figure_dir, backbone)
            log.study_finished(best, studies.state_counts(study), figures)
            report = build_report(params, backbone, study, best, space, notes + figure_notes)
            report["seconds"] = round(time.monotonic() - started, 1)
            oof_path = reports_dir / "tune" / f"{backbone}_oof.csv"
            report["oof_file"] = None
            oof_path.write_text(",".join(OOF_COLUMNS) + "\n")  # no complete trial: train runs its own CV
            if best is not None:
                report["best"]["fingerprint"] = fingerprint_of(params, backbone, report, data_sha, champion)
                summary, oof = log.download_cv(best.user_attrs[RUN_ATTR], Path(tmp) / "best")
                report["best"]["cv"] = summary
                oof_path.write_bytes(oof.read_bytes())
                report["oof_file"] = str(oof_path)
            path = write_report(reports_dir / "tune" / f"{backbone}.json", report)
    return TuneOutcome(path, report, report["notes"])


def init_availability(
    params: Params, backbone: str, split: Split, manifest: Any, folder: Path
) -> tuple[Champion | None, dict[str, str | None]]:
    """Which ``init`` choices can be used here: None when usable, else the reason."""
    reasons: dict[str, str | None] = {"scratch": None}
    weights = weights_path(backbone, params.train.weights_dir)
    reasons["pretrained"] = None if weights.is_file() else f"no ImageNet weights file {weights}"
    champion = None
    if _searches(params.tune.space.get("init"), "registry"):
        try:
            champion = find_champion(params.mlflow, backbone, test_samples(split, manifest), folder)
            reasons["registry"] = None
        except NoChampion as error:
            reasons["registry"] = str(error)
    return champion, reasons


def _searches(dimension: Dimension | None, choice: str) -> bool:
    return dimension is not None and dimension.choices is not None and choice in dimension.choices


def study_settings(params: Params, space: dict[str, Dimension], champion: Champion | None) -> dict[str, Any]:
    """Everything that makes two studies' trials comparable besides the data."""
    fixed = params.train.model_dump(exclude={"backbones", "bootstrap", "threads", "device", *space})
    return {
        "objective": params.tune.objective,
        "space": {key: dim.model_dump(exclude_none=True) for key, dim in space.items()},
        "train": fixed,
        "seed": params.seed,
        "crop_size": params.segment.crop_size,
        "champion": champion.describe() if champion else None,
    }


def fingerprint_of(
    params: Params, backbone: str, report: dict[str, Any], data_sha: str, champion: Champion | None
) -> str:
    """The best trial's CV fingerprint, as ``train`` will compute it for the tuned configuration."""
    config = tuned_train(params, report)
    start_from = str(champion.path) if champion and config.init == "registry" else None
    spec = ModelSpec(backbone, config.init, config.input_size, config.weights_dir, start_from)
    return cv_fingerprint(config, params.seed, data_sha, spec)


def build_report(
    params: Params,
    backbone: str,
    study: optuna.Study,
    best: FrozenTrial | None,
    space: dict[str, Dimension],
    notes: list[str],
) -> dict[str, Any]:
    baseline_trial = next((t for t in study.trials if t.user_attrs.get("baseline")), None)
    report: dict[str, Any] = {
        "backbone": backbone,
        "study": study.study_name,
        "storage": studies.redact(params.tune.storage),
        "objective": params.tune.objective,
        "target_sensitivity": params.train.target_sensitivity,
        "n_trials": params.tune.n_trials,
        "trials": studies.state_counts(study),
        "pruned_by": _pruned_by(study),
        "space": {key: dim.model_dump(exclude_none=True) for key, dim in space.items()},
        "baseline": _trial_summary(baseline_trial),
        "best": _trial_summary(best),
        "improvement": None,
        "notes": notes,
    }
    if best is not None and baseline_trial is not None and baseline_trial.value is not None:
        report["improvement"] = best.value - baseline_trial.value
    return report


def _pruned_by(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        reason = str(trial.user_attrs.get("stopped_by", "pruner"))
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def _trial_summary(trial: FrozenTrial | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "cv_auc": trial.user_attrs.get("cv_auc"),
        "seconds": trial.user_attrs.get("seconds"),
        "values": dict(trial.params),
        "mlflow_run_id": trial.user_attrs.get(RUN_ATTR),
    }


def write_report(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return path
