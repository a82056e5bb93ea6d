"""One Optuna study per backbone: its RDB storage, name, sampler, pruner and best trial.

* **Storage**: ``tune.storage`` is any SQLAlchemy URL Optuna's RDB storage takes: SQLite by
  default, PostgreSQL to share a study between workers on several machines (Optuna's documented
  way to scale out). Each worker sends a heartbeat; a trial whose worker went silent (killed) for
  twice ``tune.heartbeat_s`` is failed by the next worker and retried once with the same values.
* **Name**: ``<prefix>-<backbone>-<data hash>-<config hash>``: new crops, a new split or another
  space, objective or fixed training setting start a new study instead of mixing incomparable
  trials; the same ones resume the old study.
* **Sampler**: TPE seeded with ``seed`` (plus ``1000 x worker``, so parallel workers do not draw
  the same values, plus the trials already in the study, so a resumed study does not draw its
  first values again), ``constant_liar`` so running trials of other workers steer it away.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ctcid.config.base import redact_url
from ctcid.config.tune import TuneParams
from ctcid.errors import CtcidError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def config_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def study_name(prefix: str, backbone: str, data_sha256: str, config_sha256: str) -> str:
    return f"{prefix}-{backbone}-data{data_sha256[:10]}-cfg{config_sha256[:8]}"


def open_storage(tune: TuneParams) -> RDBStorage:
    """The RDB storage of ``tune.storage``, with heartbeats and one retry of a killed trial."""
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if tune.storage.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}  # another process may hold the write lock
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                tune.storage,
                engine_kwargs=engine,
                heartbeat_interval=tune.heartbeat_s,
                grace_period=2 * tune.heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as error:  # unreachable server, unknown driver, bad URL
        raise CtcidError(
            f"Optuna storage {redact_url(tune.storage)} is not usable ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); check tune.storage (docs/tuning.md)"
        ) from None


def sampler(
    tune: TuneParams, seed: int, worker: int, trials_before: int = 0
) -> optuna.samplers.TPESampler:
    """TPE seeded by the seed, the worker and how many trials the study held when this run opened it.

    A new study's sequence is fixed by the seed; a resumed one does not redraw its first values.
    """
    return optuna.samplers.TPESampler(
        seed=seed + 1000 * worker + trials_before,
        n_startup_trials=tune.startup_trials,
        constant_liar=True,
        multivariate=True,
    )


def pruner(tune: TuneParams, n_steps: int) -> optuna.pruners.BasePruner:
    """Pruning compares the running CV figure after each fold (step = fold number)."""
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_steps, reduction_factor=3)
    percentile = 50.0 if tune.pruner == "median" else tune.pruner_percentile
    return optuna.pruners.PercentilePruner(
        percentile, n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=0
    )


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the best objective; CV AUC breaks ties (specificity is coarse)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return max(complete, key=lambda t: (t.value, t.user_attrs.get("cv_auc", 0.0), -t.number))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts
