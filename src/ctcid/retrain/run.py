"""``ctcid retrain``: pull, ``dvc repro`` (the gate is a stage), then the summary and exit status.

Nothing here decides what to re-run or whether to promote: DVC re-runs the stages whose inputs
changed, the register stage adds a challenger keyed on the model file's hash, and the promote
stage applies ``params.registry``. That is what makes a retrain safe to kill and start again:
DVC records each finished stage in dvc.lock as it goes, Optuna keeps finished trials in its
storage, and a model registered before the kill is found by its hash instead of registered twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from ctcid.config.params import Params
from ctcid.errors import CtcidError
from ctcid.paths import (
    PACKAGE_FILE,
    PROMOTION_FILE,
    RAW_DVC_FILE,
    REPORTS_DIR,
    RETRAIN_RECORD_FILE,
    RETRAIN_SUMMARY_FILE,
)
from ctcid.retrain.baseline import Baseline, resolve
from ctcid.retrain.batch import BatchReport, stats_now
from ctcid.retrain.changes import metrics_diff, metrics_now
from ctcid.retrain.outcome import GateResult, decide
from ctcid.retrain.stages import changed_stages, lock_entries, pipeline_stages
from ctcid.retrain.summary import RetrainResult, Serving

PROMOTE_STAGE = "promote"


@dataclass(frozen=True)
class RetrainOptions:
    root: Path = Path(".")
    since: str | None = None  # a git revision to compare with instead of the last retrain
    pull: bool = True
    summary: Path = RETRAIN_SUMMARY_FILE
    record: Path = RETRAIN_RECORD_FILE
    dvc: str = "dvc"
    notes: list[str] = field(default_factory=list)


def retrain(params: Params, options: RetrainOptions, console: Console) -> RetrainResult:
    root = options.root
    check_project(root)
    started, clock = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), time.monotonic()
    notes = list(options.notes)
    if options.pull:
        notes += _pull(root, options.dvc, console)
    before = lock_entries(root)
    baseline = resolve(root, options.since, root / options.record, options.dvc)
    error, interrupted = None, False
    console.rule("dvc repro: the stages whose inputs changed")
    try:
        subprocess.run([options.dvc, "repro"], cwd=root, check=True)
    except subprocess.CalledProcessError as failed:
        error = f"dvc repro exited with status {failed.returncode} (its output above names the stage)"
    except KeyboardInterrupt:
        interrupted = True
    lock_after = lock_entries(root)
    ran = changed_stages(before, lock_after)
    decided = gate_ran(ran, baseline.lock, lock_after)
    gate = GateResult.read(root / REPORTS_DIR / PROMOTION_FILE) if decided else None
    outcome = decide(error, interrupted, decided, gate)
    after = Baseline(
        f"the last retrain ({started})", stats_now(root), metrics_now(root, options.dvc), lock=lock_after
    )
    result = RetrainResult(
        outcome=outcome,
        started=started,
        seconds=time.monotonic() - clock,
        commit=_git_commit(root),
        batch=BatchReport(baseline.label, baseline.data, after.data),
        stages=pipeline_stages(root, options.dvc),
        ran=ran,
        gate=gate,
        metrics=metrics_diff(root, baseline.rev, baseline.metrics, options.dvc, now=after.metrics),
        # the next retrain compares with this one, unless this one did not finish
        next_baseline=after if outcome in ("promoted", "kept") else baseline,
        serving=_serving(params, root),
        error=error,
        notes=notes,
    )
    result.write(root / options.summary, root / options.record)
    return result


def gate_ran(ran: list[str], baseline_lock: dict[str, str] | None, lock_after: dict[str, str]) -> bool:
    """Whether ``promote`` ran in this run or since the baseline: a promotion just before a kill,
    or before a ``package`` stage that failed, is still this batch's decision when run again."""
    since_baseline = [] if baseline_lock is None else changed_stages(baseline_lock, lock_after)
    return PROMOTE_STAGE in ran or PROMOTE_STAGE in since_baseline


def check_project(root: Path) -> None:
    missing = [name for name in ("dvc.yaml", ".dvc", RAW_DVC_FILE.as_posix()) if not (root / name).exists()]
    if missing:
        raise CtcidError(
            f"{root.resolve()} is not a ctcid project with DVC-tracked raw data "
            f"(missing: {', '.join(missing)}); "
            "run 'make run' once first, then add new samples to data/raw and 'dvc add data/raw'"
        )


def _pull(root: Path, dvc: str, console: Console) -> list[str]:
    """Fetch the raw data, the outputs dvc.lock records and the run cache, so that no stage whose
    inputs were seen before runs again (CI's lock on main lags until its pull request is merged)."""
    console.rule("dvc pull: data, cached stage outputs and the run cache")
    pulled = subprocess.run([dvc, "pull", "--allow-missing", "--run-cache"], cwd=root)
    if pulled.returncode == 0:
        return []
    return [f"dvc pull exited with status {pulled.returncode}: outputs missing locally are recomputed"]


def _serving(params: Params, root: Path) -> Serving:
    """The champion now (from the registry) and the Bento the package stage built for it."""
    from ctcid.registry_client import RegistryClient

    champion = None
    try:
        registry = RegistryClient(params.mlflow)
        if registry.exists() and (found := registry.champion()) is not None:
            champion = found.version
    except CtcidError:
        pass  # the tracking server is down: the summary says "none", the error was printed
    package = root / REPORTS_DIR / PACKAGE_FILE
    bento = None
    if package.exists():
        packaged = json.loads(package.read_text())
        bento = packaged.get("bento") if str(packaged.get("version")) == champion else None
    return Serving(params.mlflow.model_name, champion, bento)


def _git_commit(root: Path) -> str | None:
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None
