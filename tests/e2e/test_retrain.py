"""A rehearsal of CI's retrain on a copy of the tiny project, with the real DVC, MLflow and Optuna.

A new batch arrives; the first `ctcid retrain` is killed (SIGKILL to its whole process group)
while it tunes; the second resumes it; a third finds nothing new. Module-scoped: the runs are the
expensive part, the tests only read what they left. The copy retrains two of the tiny project's
five backbones (the two fastest): nothing rehearsed here (the kill, the resume, the gate, the
summary) depends on how many, and the rehearsal takes half the time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from e2e_support import _env, registry, run

from ctcid.retrain.stages import changed_stages, lock_entries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
NEW_SAMPLES = 2
RETRAINED = ["resnet18", "alexnet"]


@dataclass(frozen=True)
class Killed:
    at: float  # time.time() of the kill
    study: str  # the study that had finished a trial when the retrain was killed
    finished_stages: list[str]  # stages dvc.lock recorded before the kill
    versions: list[str]


@dataclass(frozen=True)
class Run:
    status: int
    output: str
    record: dict
    summary: str


@dataclass(frozen=True)
class Rehearsal:
    repo: Path
    versions_before: list[str]
    champion_before: str
    killed: Killed
    resumed: Run
    versions_resumed: list[str]
    again: Run
    versions_after: list[str]
    stages: list[str]


def versions(repo: Path) -> list[str]:
    return sorted(str(v.version) for v in registry(repo).versions())


def retrain(repo: Path) -> Run:
    done = subprocess.run(["ctcid", "retrain"], cwd=repo, env=_env(), capture_output=True, text=True)
    record = json.loads((repo / "reports/retrain.json").read_text())
    return Run(done.returncode, done.stdout[-3000:] + done.stderr[-3000:], record,
               (repo / "reports/retrain_summary.md").read_text())


def study_with_a_finished_trial(storage: str, known: set[str]) -> str | None:
    try:
        for summary in optuna.get_all_study_summaries(storage):
            if summary.study_name in known:
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                return summary.study_name
    except Exception:  # SQLite busy while the tuning worker writes: look again
        return None
    return None


def kill_while_tuning(repo: Path) -> Killed:
    storage = f"sqlite:///{repo / 'optuna.db'}"
    known = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    lock_before = lock_entries(repo)
    with open(repo / "killed_retrain.log", "w") as log:
        process = subprocess.Popen(["ctcid", "retrain"], cwd=repo, env=_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline, study = time.monotonic() + 900, None
        while study is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            study = study_with_a_finished_trial(storage, known)
        assert process.poll() is None, f"the retrain ended before it could be killed:\n{_tail(repo)}"
        assert study is not None, f"no tuning trial finished in time:\n{_tail(repo)}"
        os.killpg(process.pid, signal.SIGKILL)  # the machine is lost: nobody cleans up
        process.wait(timeout=60)
    return Killed(time.time(), study, changed_stages(lock_before, lock_entries(repo)), versions(repo))


def _tail(repo: Path) -> str:
    return (repo / "killed_retrain.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def rehearsal(pristine_project: Path) -> Rehearsal:
    repo = pristine_project
    # main as CI finds it: the last retrain's dvc.lock merged, then a commit adding a batch
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["backbones"] = RETRAINED
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "add", "dvc.lock", "params.yaml")
    run(repo, "git", "commit", "-qm", "dvc.lock of the first run; retrain two backbones")
    champion = registry(repo).alias("champion")
    versions_before = versions(repo)
    run(repo, "ctcid", "simulate", "--out", "data/raw", "--first-sample", "14", "--samples", str(NEW_SAMPLES))
    run(repo, "dvc", "add", "-q", "data/raw")
    run(repo, "git", "add", "data/raw.dvc")
    run(repo, "git", "commit", "-qm", "a new batch")
    killed = kill_while_tuning(repo)
    resumed = retrain(repo)
    assert resumed.status in (0, 3), resumed.output
    versions_resumed = versions(repo)
    again = retrain(repo)
    stages = run(repo, "dvc", "stage", "list", "--name-only").stdout.split()
    return Rehearsal(
        repo, versions_before, str(champion.version), killed, resumed, versions_resumed, again,
        versions(repo), stages,
    )


def test_the_kill_left_no_half_registered_version(rehearsal: Rehearsal) -> None:
    assert rehearsal.killed.versions == rehearsal.versions_before
    # it was killed after the data stages and before the registry's
    assert {"segment", "validate", "split"} <= set(rehearsal.killed.finished_stages)
    assert not {"register", "promote", "package"} & set(rehearsal.killed.finished_stages)


def test_the_resumed_retrain_redid_no_finished_stage_and_ran_every_other(rehearsal: Rehearsal) -> None:
    finished, resumed = set(rehearsal.killed.finished_stages), set(rehearsal.resumed.record["stages_run"])
    assert not finished & resumed, f"re-ran after the kill: {sorted(finished & resumed)}"
    # every stage but the external cohorts' (made from params, not data/raw) is downstream of
    # data/raw: together the two runs ran each exactly once, and the cohorts were left alone
    cohorts = {s for s in rehearsal.stages if s.startswith("external_cohort@")}
    assert cohorts and finished | resumed == set(rehearsal.stages) - cohorts
    unchanged = [s for s in rehearsal.stages if s in finished or s in cohorts]
    assert rehearsal.resumed.record["stages_unchanged"] == unchanged


def test_the_resumed_tuning_kept_the_trials_finished_before_the_kill(rehearsal: Rehearsal) -> None:
    storage = f"sqlite:///{rehearsal.repo / 'optuna.db'}"
    study = optuna.load_study(study_name=rehearsal.killed.study, storage=storage)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = study.get_trials(deepcopy=False, states=states)
    kept = [t for t in finished if t.datetime_complete.timestamp() < rehearsal.killed.at]
    assert kept, "no trial finished before the kill survived"
    n_trials = yaml.safe_load((rehearsal.repo / "params.yaml").read_text())["tune"]["n_trials"]
    # the study ran to n_trials finished trials in all: nothing finished was run again
    assert len(finished) == n_trials


def test_one_new_challenger_and_the_gate_decided(rehearsal: Rehearsal) -> None:
    record = rehearsal.resumed.record
    new = sorted(set(rehearsal.versions_resumed) - set(rehearsal.versions_before))
    assert len(new) == 1
    assert registry(rehearsal.repo).alias("challenger").version == int(new[0])
    gate = record["gate"]
    assert gate["challenger"] == new[0] and gate["champion_before"] == rehearsal.champion_before
    assert gate["action"] in ("promoted", "refused")
    assert f"## The gate: {gate['action']}" in rehearsal.resumed.summary
    promoted = gate["action"] == "promoted"
    assert record["outcome"] == ("promoted" if promoted else "kept")
    assert rehearsal.resumed.status == (0 if promoted else 3)
    champion = registry(rehearsal.repo).alias("champion")
    assert str(champion.version) == (new[0] if promoted else rehearsal.champion_before)
    assert record["serving"]["champion"] == str(champion.version)


def test_the_summary_counts_the_whole_batch_despite_the_kill(rehearsal: Rehearsal) -> None:
    data = rehearsal.resumed.record["data"]
    assert data["since"] == "HEAD"
    assert data["added"]["samples"] == NEW_SAMPLES and data["added"]["fields"] == NEW_SAMPLES
    assert data["added"]["cells"] > 0 and data["before"]["samples"] == 14
    assert "| samples | 14 | 16 | +2 |" in rehearsal.resumed.summary
    changed = {(m["path"], m["metric"]) for m in rehearsal.resumed.record["metrics_changed"]}
    assert ("reports/validation.json", "stats.n_samples") in changed


def test_a_retrain_with_nothing_new_does_nothing(rehearsal: Rehearsal) -> None:
    again = rehearsal.again
    assert again.status == 3, again.output
    assert again.record["outcome"] == "kept" and again.record["stages_run"] == []
    assert again.record["gate"] is None
    assert again.record["data"]["added"]["samples"] == 0
    assert rehearsal.versions_after == rehearsal.versions_resumed  # registered nothing
    assert f"0 of {len(rehearsal.stages)} re-ran" in again.summary
