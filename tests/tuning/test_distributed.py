"""Two ``ctcid tune`` workers share one study on PostgreSQL (Optuna's documented way to scale out)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from tuning_support import (
    WIDE,
    all_runs,
    children,
    finished_trials,
    only_study,
    study_is_open_and_training,
    tune_command,
    tune_params,
    tune_parents,
    wait_for,
    write_params,
)

from ctcid.tracking import PARENT_TAG, open_experiment
from ctcid.tuning.run_log import RUN_ATTR
from factory import POSTGRES

N_TRIALS = 8


@pytest.fixture
def postgres_storage(postgres_database: str) -> str:
    return f"postgresql+psycopg://{POSTGRES}/{postgres_database}"


@pytest.mark.timeout(300)
def test_two_workers_share_one_study_on_postgresql(
    postgres_storage: str, synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    params = tune_params(tmp_path, storage=postgres_storage, n_trials=N_TRIALS, heartbeat_s=5)
    params_file = write_params(params, tmp_path / "params.yaml")
    # the shared stores exist before the workers start (as a team's server and database do)
    open_experiment(params.mlflow)
    optuna.storages.RDBStorage(postgres_storage)
    logs = [tmp_path / f"worker{w}.log" for w in (0, 1)]
    workers: list[subprocess.Popen] = []

    def start(worker: int) -> None:
        reports = tmp_path / f"reports{worker}"
        command = tune_command(params_file, synthetic_stage_inputs, reports, "--worker", str(worker))
        with logs[worker].open("w") as out:
            workers.append(
                subprocess.Popen(command, cwd=tmp_path, env=WIDE, stdout=out, stderr=subprocess.STDOUT)
            )

    try:
        start(0)
        # worker 1 joins once worker 0 has opened the study (and its MLflow run) and trains: two
        # workers that open a new study in the same instant may each queue a baseline trial and
        # each start a parent run (tune.open_study and StudyRunLog.open check, then write)
        wait_for(workers[0], postgres_storage, study_is_open_and_training, timeout_s=120)
        start(1)
        codes = [w.wait(timeout=240) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n---\n".join(t[-3000:] for t in texts)

    study = only_study(postgres_storage)
    assert study is not None
    trials = study.get_trials()
    finished = finished_trials(study)
    assert N_TRIALS <= len(finished) <= N_TRIALS + 1  # each worker may finish the trial it had started
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) == len(trials)
    # the workers' samplers are seeded apart: no values drawn twice
    drawn = [tuple(sorted(values.items())) for _, _, values in finished.values()]
    baseline = [t for t in trials if t.user_attrs.get("baseline")]
    assert len(baseline) == 1, [(t.number, t.params) for t in baseline]
    assert len(set(drawn)) == len(drawn), drawn
    # each worker ran trials of its own: every trial line on a worker's terminal names another trial
    ran = [
        {int(line.split()[1].rstrip(":")) for line in t.splitlines() if line.startswith("trial ")}
        for t in texts
    ]
    assert all(ran) and not ran[0] & ran[1], ran

    # one MLflow parent run for the study, every trial's run below it
    runs = all_runs(params)
    parents = tune_parents(runs)
    assert [p.info.run_id for p in parents] == [study.user_attrs[RUN_ATTR]]
    parent_id = parents[0].info.run_id
    client = MlflowClient(params.mlflow.tracking_uri)
    for trial in trials:
        run = client.get_run(trial.user_attrs[RUN_ATTR])
        assert run.data.tags[PARENT_TAG] == parent_id
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
    trial_runs = children(runs, parent_id)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == sorted(numbers)
    assert optuna.get_all_study_names(postgres_storage) == [study.study_name]
