"""The tune stage for one backbone: an Optuna study under the split's CV folds, then its report.

1. the study (``tuning.study``): created, or resumed where an earlier run or another worker left
   it; a new study starts with the untuned ``train.*`` values as trial 0;
2. trials (``tuning.objective``) until ``tune.n_trials`` trials of the study are finished
   (complete or pruned, counting every worker) or ``tune.timeout_s`` is spent;
3. ``reports/tune/<backbone>.json`` (``tuning.report``): the best trial's values (what ``train``
   applies), its CV summary and fingerprint, the baseline trial and the gain over it; its out-of-fold
   predictions in ``<backbone>_oof.csv`` (``train`` reuses them); Optuna's figures in
   ``reports/tune/figures/`` and in the study's MLflow run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from ctcid.config.base import redact_url
from ctcid.config.tune import Dimension
from ctcid.contracts import read_manifest
from ctcid.errors import CtcidError
from ctcid.model.backbones import ModelSpec, weights_path
from ctcid.model.dataset import input_levels
from ctcid.model.train import cv_fingerprint, data_digest, test_samples, tuned_train
from ctcid.model.trainer import resolve_device
from ctcid.model.transfer import NoChampion, find_champion
from ctcid.paths import TUNE_FIGURES, TUNE_REPORTS, StageInputs
from ctcid.registry_client import Champion
from ctcid.split import Split, read_split
from ctcid.tuning import study as studies
from ctcid.tuning.figures import write_figures
from ctcid.tuning.objective import Objective, TrialData
from ctcid.tuning.report import TuneOutcome, baseline_trial_of, build_report, untuned, write_outputs
from ctcid.tuning.run_log import StudyRunLog
from ctcid.tuning.settings import TuneConfig
from ctcid.tuning.space import available_space, baseline

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def tune_backbone(
    params: TuneConfig,
    backbone: str,
    inputs: StageInputs,
    reports_dir: Path,
    *,
    worker: int = 0,
    on_trial: TrialCallback | None = None,
) -> TuneOutcome:
    """Run (or resume) ``backbone``'s study to ``tune.n_trials`` and write its report."""
    params = TuneConfig.project(params)  # whatever the caller holds, tuning reads only its keys
    tune = params.tune
    if tune.n_trials == 0:
        return untuned(params, backbone, reports_dir)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    started = time.monotonic()
    deadline = started + (tune.timeout_s or float("inf"))
    device = resolve_device(params.train.device)
    split, manifest = read_split(inputs.split), read_manifest(inputs.manifest)
    data_sha = data_digest(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        champion, init_reasons = init_availability(params, backbone, split, manifest, Path(tmp))
        space, notes = available_space(tune.space, init_reasons)
        study, created = open_study(params, backbone, data_sha, space, champion, worker, len(split.folds))
        tags = {"optuna.storage": redact_url(tune.storage), "tune.objective": tune.objective}
        with StudyRunLog.open(params.mlflow, study, backbone, tags, created) as log:
            levels = input_levels(manifest, params.channels, params.train.standardise)
            data = TrialData(inputs.crops, manifest, split, levels, params.segment.cd45_threshold)
            objective = Objective(
                params, backbone, space, data, log,
                deadline=deadline, device=device, start_from=str(champion.path) if champion else None,
            )
            run_trials(study, objective, tune.n_trials, deadline, on_trial)
            best = studies.best_trial(study)
            figure_dir = reports_dir / TUNE_REPORTS / TUNE_FIGURES / backbone
            figures, figure_notes = write_figures(study, figure_dir, backbone)
            log.study_finished(best, studies.state_counts(study), figures)
            report = build_report(params, backbone, study, best, space, notes + figure_notes)
            report["seconds"] = round(time.monotonic() - started, 1)
            if best is not None:
                fingerprint = fingerprint_of(params, backbone, report, data_sha, champion, device)
                report["best"]["fingerprint"] = fingerprint
            path = write_outputs(report, best, log, reports_dir / TUNE_REPORTS, Path(tmp))
    return TuneOutcome(path, report, report["notes"])


def open_study(
    params: TuneConfig,
    backbone: str,
    data_sha: str,
    space: dict[str, Dimension],
    champion: Champion | None,
    worker: int,
    n_folds: int,
) -> tuple[optuna.Study, bool]:
    """The backbone's study for this data and configuration, created or resumed; baseline queued.

    Only the worker that creates the study queues the baseline (two workers starting together
    would queue it twice); a resumed study re-queues it when an interrupt lost it.
    """
    tune = params.tune
    settings = study_settings(params, space, champion)
    name = studies.study_name(tune.study_prefix, backbone, data_sha, studies.config_digest(settings))
    storage, pruner = studies.open_storage(tune), studies.pruner(tune, n_folds)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        created = False
    study.sampler = studies.sampler(tune, params.seed, worker, len(study.get_trials(deepcopy=False)))
    untuned = baseline(params.train, space, params.segment.crop_size)
    if tune.baseline_trial and (created or baseline_trial_of(study) is None):
        study.enqueue_trial(untuned, user_attrs={"baseline": True})
    if created:
        for point in tune.enqueue:
            # train.* with the point's changes, as a hand-run experiment would try it
            usable = {k: v for k, v in point.items() if space[k].choices is None or v in space[k].choices}
            study.enqueue_trial({**untuned, **usable}, user_attrs={"enqueued": True})
    return study, created


def run_trials(
    study: optuna.Study, objective: Objective, n_trials: int, deadline: float, on_trial: TrialCallback | None
) -> None:
    """Trials until the study holds ``n_trials`` finished ones (any worker) or the budget is spent."""
    remaining = n_trials - len(studies.finished(study))
    if remaining <= 0:
        return
    callbacks: list[TrialCallback] = [
        MaxTrialsCallback(n_trials, states=studies.FINISHED),
        stop_at(deadline),  # Optuna's own timeout would count from here, not from the start
    ]
    if on_trial is not None:
        callbacks.append(on_trial)
    study.optimize(
        objective, n_trials=remaining, catch=(CtcidError,), callbacks=callbacks, gc_after_trial=True
    )



def stop_at(deadline: float) -> TrialCallback:
    """Start no trial once the budget is spent (the running one is stopped by the objective)."""

    def callback(study: optuna.Study, _: FrozenTrial) -> None:
        if time.monotonic() >= deadline:
            study.stop()

    return callback




def init_availability(
    params: TuneConfig, backbone: str, split: Split, manifest: Any, folder: Path
) -> tuple[Champion | None, dict[str, str | None]]:
    """Which ``init`` choices can be used here: None when usable, else the reason."""
    reasons: dict[str, str | None] = {"scratch": None}
    weights = weights_path(backbone, params.train.weights_dir)
    reasons["pretrained"] = None if weights.is_file() else f"no ImageNet weights file {weights}"
    champion = None
    searched = params.tune.space.get("init")
    if _searches(searched, "registry") or (searched is None and params.train.init == "registry"):
        try:
            champion = find_champion(params.mlflow, backbone, test_samples(split, manifest), folder)
            reasons["registry"] = None
        except NoChampion as error:
            reasons["registry"] = str(error)
    return champion, reasons


def _searches(dimension: Dimension | None, choice: str) -> bool:
    return dimension is not None and dimension.choices is not None and choice in dimension.choices


def study_settings(
    params: TuneConfig, space: dict[str, Dimension], champion: Champion | None
) -> dict[str, Any]:
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
    params: TuneConfig,
    backbone: str,
    report: dict[str, Any],
    data_sha: str,
    champion: Champion | None,
    device: torch.device,
) -> str:
    """The best trial's CV fingerprint, as ``train`` will compute it for the tuned configuration."""
    config = tuned_train(params, report)
    start_from = str(champion.path) if champion and config.init == "registry" else None
    spec = ModelSpec(backbone, config.init, config.input_size, config.weights_dir, start_from)
    return cv_fingerprint(config, params.seed, data_sha, spec, device)
