"""What a study leaves behind: ``reports/tune/<backbone>.json`` and the best trial's predictions.

The report names the study and storage, the trial counts by state (and what pruned them), the
searched space, the baseline trial 0 and the best trial (its values, which ``train`` applies, its
CV summary and the fingerprint that lets ``train`` reuse its folds) and the gain over the baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ctcid.config.base import redact_url
from ctcid.config.tune import Dimension
from ctcid.paths import TUNE_FIGURES, TUNE_REPORTS, backbone_oof, backbone_report
from ctcid.tuning import study as studies
from ctcid.tuning.run_log import RUN_ATTR, StudyRunLog
from ctcid.tuning.settings import TuneConfig

OOF_COLUMNS = ("crop_index", "fold", "y_true", "y_score")  # CVResult.oof


@dataclass
class TuneOutcome:
    report_path: Path
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def outcome_summary(outcome: TuneOutcome, backbone: str) -> str:
    """What ``ctcid tune`` prints at the end: its notes, then the best trial against the baseline."""
    report = outcome.report
    lines = [f"note: {note}" for note in outcome.notes]
    best, base = report["best"], report["baseline"]
    if best is None:
        lines.append(f"{backbone}: no complete trial ({report['trials']}); train uses train.* as given")
        return "\n".join(lines)
    gain = f"; baseline trial {base['value']:.4f}" if base and base.get("value") is not None else ""
    lines.append(
        f"{backbone}: best trial {best['number']} {report['objective']} {best['value']:.4f} "
        f"(CV AUC {best['cv_auc']:.4f}){gain}; trials {report['trials']} -> {outcome.report_path}"
    )
    return "\n".join(lines)


def write_outputs(
    report: dict[str, Any], best: FrozenTrial | None, log: StudyRunLog, folder: Path, tmp: Path
) -> Path:
    """``<backbone>.json`` and ``<backbone>_oof.csv`` (the best trial's, fetched from its MLflow run).

    Without a complete trial the CSV holds only its header: train then runs its own folds.
    """
    backbone = report["backbone"]
    oof_path = backbone_oof(folder, backbone)
    folder.mkdir(parents=True, exist_ok=True)
    oof_path.write_text(",".join(OOF_COLUMNS) + "\n")
    report["oof_file"] = None
    if best is not None:
        summary, oof = log.download_cv(best.user_attrs[RUN_ATTR], tmp / "best")
        report["best"]["cv"] = summary
        oof_path.write_bytes(oof.read_bytes())
        report["oof_file"] = str(oof_path)
    return write_report(backbone_report(folder, backbone), report)


def untuned(params: TuneConfig, backbone: str, reports_dir: Path) -> TuneOutcome:
    """``tune.n_trials: 0``: no study; the report says so and train uses ``train.*`` as given."""
    folder = reports_dir / TUNE_REPORTS
    folder.mkdir(parents=True, exist_ok=True)
    backbone_oof(folder, backbone).write_text(",".join(OOF_COLUMNS) + "\n")
    (folder / TUNE_FIGURES / backbone).mkdir(parents=True, exist_ok=True)
    note = "tune.n_trials is 0: no tuning; train uses train.* as given"
    report = {
        "backbone": backbone, "study": None, "objective": params.tune.objective, "n_trials": 0,
        "trials": {}, "baseline": None, "best": None, "improvement": None, "notes": [note],
        "oof_file": None, "seconds": 0.0,
    }
    return TuneOutcome(write_report(backbone_report(folder, backbone), report), report, [note])


def baseline_trial_of(study: optuna.Study) -> FrozenTrial | None:
    """The study's baseline trial: the complete one, else one waiting or running, else None."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]
    for states in ((TrialState.COMPLETE,), (TrialState.WAITING, TrialState.RUNNING), (TrialState.PRUNED,)):
        found = [t for t in trials if t.state in states]
        if found:
            return found[0]
    return None


def build_report(
    params: TuneConfig,
    backbone: str,
    study: optuna.Study,
    best: FrozenTrial | None,
    space: dict[str, Dimension],
    notes: list[str],
) -> dict[str, Any]:
    baseline_trial = baseline_trial_of(study)
    report: dict[str, Any] = {
        "backbone": backbone,
        "study": study.study_name,
        "storage": redact_url(params.tune.storage),
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
