"""What tuning cost, read back from the studies of one run: seconds per trial and share pruned.

For every backbone's study in the Optuna storage (the latest study of each backbone, or those the
tune reports name), it prints:

* finished trials, complete / pruned (by the pruner, by the budget) / failed;
* median seconds of a complete trial and of a pruned one, and the wall-clock of the whole study;
* the share of trials pruned, and the best trial's objective against the baseline trial 0.

It measures nothing itself: the numbers are those of the ``ctcid tune`` runs that filled the
storage (``make run``, or a ``dvc repro`` of configs/paper.yaml on a GPU). Usage::

    .venv/bin/python bench/bench_tune.py [--storage sqlite:///optuna.db] [--reports reports/tune]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from ctcid.config.loader import load_params
from ctcid.tuning.study import best_trial


def seconds(trial: FrozenTrial) -> float | None:
    return trial.duration.total_seconds() if trial.duration is not None else None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def study_costs(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    finished = complete + pruned
    by_budget = [t for t in pruned if t.user_attrs.get("stopped_by") == "budget"]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    best = best_trial(study)
    return {
        "study": study.study_name,
        "finished": len(finished),
        "complete": len(complete),
        "pruned_by_pruner": len(pruned) - len(by_budget),
        "pruned_by_budget": len(by_budget),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "pruned_share": len(pruned) / len(finished) if finished else None,
        "median_complete_s": median([s for t in complete if (s := seconds(t)) is not None]),
        "median_pruned_s": median([s for t in pruned if (s := seconds(t)) is not None]),
        "study_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "baseline_value": baseline.value if baseline is not None else None,
        "best_value": best.value if best is not None else None,
        "best_number": best.number if best is not None else None,
    }


def studies_to_read(storage: str, reports: Path) -> dict[str, str]:
    """backbone -> study name: from the tune reports when present, else the newest per backbone."""
    named = {}
    for report in sorted(reports.glob("*.json")):
        content = json.loads(report.read_text())
        if "study" in content and "backbone" in content:
            named[content["backbone"]] = content["study"]
    if named:
        return named
    for summary in optuna.get_all_study_summaries(storage):
        parts = summary.study_name.split("-")
        if len(parts) >= 4:
            named[parts[-3]] = summary.study_name  # later studies replace earlier ones
    return named


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml", help="Params file: tune.storage by default.")
    parser.add_argument("--storage", help="Optuna storage URL (default: tune.storage of --params).")
    parser.add_argument("--reports", type=Path, default=Path("reports/tune"), help="Tune reports folder.")
    parser.add_argument("--json", type=Path, help="Also write the numbers to this JSON file.")
    args = parser.parse_args()
    storage = args.storage or load_params(args.params).tune.storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = {
        backbone: study_costs(optuna.load_study(study_name=name, storage=storage))
        for backbone, name in studies_to_read(storage, args.reports).items()
    }
    if not rows:
        raise SystemExit(f"no ctcid study in {storage}; run 'ctcid tune' (dvc repro) first")
    table = Table(title=f"tuning cost ({storage})")
    columns = ["backbone", "finished", "complete", "pruned (pruner/budget)", "pruned share",
               "s / complete trial", "s / pruned trial", "study s", "baseline", "best"]
    for column in columns:
        table.add_column(column, justify="left" if column == "backbone" else "right")

    def fmt(value: float | None, spec: str = ".0f") -> str:
        return "-" if value is None else format(value, spec)

    for backbone, row in rows.items():
        table.add_row(
            backbone, str(row["finished"]), str(row["complete"]),
            f"{row['pruned_by_pruner']}/{row['pruned_by_budget']}", fmt(row["pruned_share"], ".0%"),
            fmt(row["median_complete_s"]), fmt(row["median_pruned_s"]), fmt(row["study_s"]),
            fmt(row["baseline_value"], ".4f"), fmt(row["best_value"], ".4f"),
        )
    Console(width=160).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
