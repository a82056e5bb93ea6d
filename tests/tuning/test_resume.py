"""``ctcid tune`` stopped mid-study, by Ctrl+C or a kill, and run again: the study goes on where it was."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from tuning_support import (
    BACKBONE,
    WIDE,
    all_runs,
    children,
    finished_trials,
    one_complete_and_one_training,
    only_study,
    tune_command,
    tune_params,
    tune_parents,
    wait_for,
    write_params,
)

from ctcid.tuning.run_log import RUN_ATTR

N_TRIALS = 3


def start(command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=cwd, env=WIDE, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, how: signal.Signals) -> int:
    """Send ``how`` once; a process still alive a minute later is killed (and the test fails)."""
    process.send_signal(how)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def rerun(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=cwd, env=WIDE, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.timeout(300)
def test_a_killed_study_resumes_with_its_finished_trials_and_retries_the_killed_one(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    params = tune_params(tmp_path, n_trials=N_TRIALS, heartbeat_s=1)
    storage = params.tune.storage
    command = tune_command(
        write_params(params, tmp_path / "params.yaml"), synthetic_stage_inputs, tmp_path / "r"
    )
    optuna.storages.RDBStorage(storage)  # the tables exist before this test polls them
    process = start(command, tmp_path, tmp_path / "first.log")
    try:
        wait_for(process, storage, one_complete_and_one_training, timeout_s=150)
    finally:
        code = stop(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    study = only_study(storage)
    kept = finished_trials(study)
    killed = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    parent = study.user_attrs[RUN_ATTR]
    assert kept and killed  # the kill left a trial RUNNING: its heartbeat has stopped

    rerun(command, tmp_path)  # >= 2 heartbeats (2 s) later: the killed trial is stale
    study = only_study(storage)
    after = finished_trials(study)
    assert {number: after[number] for number in kept} == kept  # numbers, states, values, values drawn
    assert len(after) == N_TRIALS
    runs = all_runs(params)
    client = MlflowClient(params.mlflow.tracking_uri)
    for number in killed:
        trial = study.trials[number]
        assert trial.state == TrialState.FAIL
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1, [(t.number, t.state.name, t.system_attrs) for t in study.trials]
        assert retries[0].params == trial.params and retries[0].state == TrialState.COMPLETE
        assert retries[0].number > max(kept)
        # the killed attempt's runs, left RUNNING by the dead process, are ended by the retry
        killed_run = client.get_run(trial.user_attrs[RUN_ATTR])
        assert (killed_run.info.status, killed_run.data.tags["optuna.state"]) == ("FAILED", "failed")
        assert retries[0].user_attrs[RUN_ATTR] != killed_run.info.run_id
        folds = [r.info.status for r in children(runs, killed_run.info.run_id)]
        assert folds and "RUNNING" not in folds, folds
    # the resumed run logs into the study's MLflow run, a child run per trial
    assert study.user_attrs[RUN_ATTR] == parent
    assert [r.info.run_id for r in tune_parents(runs)] == [parent]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        run = client.get_run(trial.user_attrs[RUN_ATTR])
        assert (run.info.status, run.data.tags["optuna.trial_number"]) == ("FINISHED", str(trial.number))
        assert run.data.tags["mlflow.parentRunId"] == parent
    report = json.loads((tmp_path / "r" / "tune" / f"{BACKBONE}.json").read_text())
    assert report["trials"] == {"complete": N_TRIALS, "fail": len(killed)}


@pytest.mark.timeout(300)
def test_ctrl_c_ends_with_status_130_and_says_how_to_continue(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    params = tune_params(tmp_path, n_trials=N_TRIALS)
    storage = params.tune.storage
    command = tune_command(
        write_params(params, tmp_path / "params.yaml"), synthetic_stage_inputs, tmp_path / "r"
    )
    optuna.storages.RDBStorage(storage)  # the tables exist before this test polls them
    log = tmp_path / "first.log"
    process = start(command, tmp_path, log)
    try:
        wait_for(process, storage, one_complete_and_one_training, timeout_s=150)
    finally:
        code = stop(process, signal.SIGINT)
    said = log.read_text()
    assert code == 130, said[-3000:]
    last = said.strip().splitlines()[-1]  # Optuna's warning of the failed trial comes before it
    expected = f"interrupted: finished trials are kept in {storage}; run the same command again"
    assert last.startswith(expected), said[-3000:]
    study = only_study(storage)
    kept = finished_trials(study)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert kept and len(interrupted) == 1  # Optuna records the interrupted trial as failed at once
    client = MlflowClient(params.mlflow.tracking_uri)
    run = client.get_run(interrupted[0].user_attrs[RUN_ATTR])
    assert (run.info.status, run.data.tags["optuna.state"]) == ("FAILED", "failed")
    assert client.get_run(study.user_attrs[RUN_ATTR]).info.status == "FAILED"

    rerun(command, tmp_path)
    study = only_study(storage)
    after = finished_trials(study)
    assert {number: after[number] for number in kept} == kept
    assert len(after) == N_TRIALS
    assert study.trials[interrupted[0].number].state == TrialState.FAIL
    assert client.get_run(study.user_attrs[RUN_ATTR]).info.status == "FINISHED"
