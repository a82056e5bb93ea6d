"""The study's storage, name, pruner and best trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ctcid.config.tune import TuneParams
from ctcid.errors import CtcidError
from ctcid.tuning import study as studies

LR = {"learning_rate": FloatDistribution(1e-5, 1e-2)}


def trial(state: TrialState, value: float | None, cv_auc: float | None = None) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=value,
        params={"learning_rate": 1e-3},
        distributions=LR,
        user_attrs={} if cv_auc is None else {"cv_auc": cv_auc},
    )


def test_the_best_trial_has_the_highest_objective_and_cv_auc_breaks_ties() -> None:
    study = optuna.create_study(direction="maximize")
    for added in (
        trial(TrialState.COMPLETE, 0.8, 0.99),
        trial(TrialState.COMPLETE, 0.9, 0.80),
        trial(TrialState.COMPLETE, 0.9, 0.95),  # ties on specificity, better AUC: the best
        trial(TrialState.COMPLETE, 0.9, 0.95),  # the same again: the earlier trial stays best
        trial(TrialState.PRUNED, 0.99),  # a pruned trial's last figure is not a result
    ):
        study.add_trial(added)
    assert studies.best_trial(study).number == 2
    assert studies.state_counts(study) == {"complete": 4, "pruned": 1}
    assert [t.number for t in studies.finished(study)] == [0, 1, 2, 3, 4]


def test_no_best_trial_without_a_complete_one() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(TrialState.PRUNED, 0.5))
    study.add_trial(trial(TrialState.FAIL, None))
    assert studies.best_trial(study) is None
    assert len(studies.finished(study)) == 1


def test_the_study_name_carries_prefix_backbone_and_both_hashes() -> None:
    data, config = "a" * 64, "b" * 64
    assert (
        studies.study_name("ctcid", "resnet18", data, config) == "ctcid-resnet18-dataaaaaaaaaaa-cfgbbbbbbbb"
    )
    assert studies.config_digest({"x": 1, "y": [2]}) == studies.config_digest({"y": [2], "x": 1})
    assert studies.config_digest({"x": 1}) != studies.config_digest({"x": 2})


def test_an_unreachable_storage_is_a_one_line_error_without_the_password() -> None:
    port = 1  # nobody listens on port 1 of the loopback
    tune = TuneParams(storage=f"postgresql+psycopg://tuner:s3cret@127.0.0.1:{port}/optuna")
    with pytest.raises(CtcidError, match=r"tuner:\*\*\*@127\.0\.0\.1:1/optuna is not usable") as error:
        studies.open_storage(tune)
    assert "s3cret" not in str(error.value) and "tune.storage" in str(error.value)


def test_the_sqlite_storage_sends_heartbeats_and_retries_a_killed_trial_once(tmp_path) -> None:
    storage = studies.open_storage(TuneParams(storage=f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=7))
    assert storage.heartbeat_interval == 7 and storage.grace_period == 14
    callback = storage.failed_trial_callback
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback) and callback._max_retry == 1


@pytest.mark.parametrize(
    ("name", "kind", "percentile"),
    [
        ("median", optuna.pruners.PercentilePruner, 50.0),
        ("percentile", optuna.pruners.PercentilePruner, 10.0),
        ("hyperband", optuna.pruners.HyperbandPruner, None),
        ("none", optuna.pruners.NopPruner, None),
    ],
)
def test_pruners(name: str, kind: type, percentile: float | None) -> None:
    pruner = studies.pruner(TuneParams(pruner=name, pruner_percentile=10.0, pruner_startup_trials=3), 5)
    assert isinstance(pruner, kind)
    if percentile is not None:
        assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps) == (percentile, 3, 0)


def test_workers_draw_different_values_and_each_draws_the_same_again() -> None:
    def first_draw(worker: int) -> float:
        study = optuna.create_study(direction="maximize", sampler=studies.sampler(TuneParams(), 3, worker))
        return study.ask().suggest_float("learning_rate", 1e-5, 1e-2, log=True)

    assert first_draw(0) != first_draw(1)
    assert first_draw(1) == first_draw(1)
