"""A study's progress on the terminal: a bar of finished trials, and one line per trial."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ctcid.config.base import redact_url
from ctcid.tuning.study import FINISHED, best_trial


@dataclass
class TrialProgress:
    """An Optuna callback: advances the bar and prints what each trial did."""

    backbone: str
    n_trials: int
    console: Console
    enabled: bool = True
    _progress: Progress | None = field(default=None, init=False)
    _task: int | None = field(default=None, init=False)

    def __enter__(self) -> TrialProgress:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.enabled,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"tune {self.backbone}", total=self.n_trials, status="")
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        best = best_trial(study)
        status = f"pruned {pruned}" + (f" best {best.value:.4f} (#{best.number})" if best else "")
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=min(done, self.n_trials), status=status)
        self.console.print(describe(trial), highlight=False)


def quiet_tools() -> None:
    """Silence what would repeat the trial lines: Optuna's own (with a traceback for a trial failed
    by Ctrl+C) and MLflow's download bars. Failures still get a line, with their reason."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def interrupted_line(storage: str) -> str:
    """What ``ctcid tune`` says when Ctrl+C stops it: the study resumes from ``storage`` (no password)."""
    return (
        f"interrupted: finished trials are kept in {redact_url(storage)}; run the same command again to "
        "continue the study"
    )


def describe(trial: FrozenTrial) -> str:
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    values = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        outcome = f"complete {trial.value:.4f} (CV AUC {trial.user_attrs.get('cv_auc', float('nan')):.4f})"
    elif trial.state == TrialState.PRUNED:
        steps = trial.last_step + 1 if trial.last_step is not None else 0
        outcome = f"pruned by the {trial.user_attrs.get('stopped_by', 'pruner')} after {steps} fold(s)"
    else:
        reason = str(trial.system_attrs.get("fail_reason", "")).strip().splitlines()
        outcome = trial.state.name.lower() + (f": {reason[-1]}" if reason else "")
    return f"trial {trial.number}: {outcome} in {seconds:.0f} s; {values}"


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
