"""``reports/retrain_summary.md``: one page a reviewer reads in the CI job summary or a terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctcid.paths import RETRAIN_RECORD_FILE
from ctcid.retrain.baseline import Baseline
from ctcid.retrain.batch import BatchReport
from ctcid.retrain.changes import MetricChange
from ctcid.retrain.outcome import EXIT_STATUS, HEADLINE, GateResult, Outcome

_METRIC_ROWS = 40  # the rest: dvc metrics diff


@dataclass(frozen=True)
class Serving:
    model_name: str
    champion: str | None  # version number
    bento: str | None


@dataclass(frozen=True)
class RetrainResult:
    outcome: Outcome
    started: str
    seconds: float
    commit: str | None
    batch: BatchReport
    stages: list[str]  # every stage of the pipeline, in order
    ran: list[str]
    gate: GateResult | None  # None when the promote stage did not run
    metrics: list[MetricChange]
    next_baseline: Baseline
    serving: Serving
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome, "exit_status": self.exit_status, "started": self.started,
            "seconds": round(self.seconds, 1), "commit": self.commit, "data": self.batch.to_dict(),
            "stages_run": self.ran, "stages_unchanged": [s for s in self.stages if s not in self.ran],
            "gate": None if self.gate is None else self.gate.decision,
            "metrics_changed": [row.to_dict() for row in self.metrics],
            "serving": self.serving.__dict__, "error": self.error, "notes": self.notes,
            "next_baseline": self.next_baseline.to_dict(),
        }

    def write(self, summary: Path, record: Path) -> None:
        for path in (summary, record):
            path.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(render(self))
        record.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")


def render(result: RetrainResult) -> str:
    sections = [_head(result), _data(result.batch), _stages(result), _gate(result),
                _metrics(result), _serving(result.serving)]
    return "\n\n".join(section for section in sections if section) + "\n"


def _head(result: RetrainResult) -> str:
    minutes, seconds = divmod(round(result.seconds), 60)
    lines = [
        f"# ctcid retrain: {HEADLINE[result.outcome]}",
        "",
        f"{result.started} · commit `{(result.commit or 'none')[:10]}` · {minutes} min {seconds:02d} s · "
        f"exit status {result.exit_status} ({result.outcome})",
        "",
        f"**{_verdict(result)}**",
    ]
    if result.error:
        lines += ["", f"Error: {result.error}"]
    if result.notes:
        lines += ["", *[f"- {note}" for note in result.notes]]
    return "\n".join(lines)


def _verdict(result: RetrainResult) -> str:
    name, decision = result.serving.model_name, (result.gate.decision if result.gate else {})
    if result.outcome == "promoted":
        before = decision.get("champion_before")
        return f"{name} v{decision.get('champion_after')} is the new champion (was {_v(before)})."
    if result.outcome == "kept" and decision.get("action") == "kept":
        return f"Challenger v{decision.get('challenger')} is already the champion; nothing moved."
    if result.outcome == "kept" and result.gate is not None:
        return (f"The gate refused challenger v{decision.get('challenger')}: "
                f"{', '.join(decision.get('failed') or []) or decision.get('reason') or 'see the table'}; "
                f"{name} stays at {_v(result.serving.champion)}.")
    if result.outcome == "kept":
        return f"Nothing new reached the gate. {name} stays at {_v(result.serving.champion)}."
    if result.outcome == "interrupted":
        return "Interrupted. Run it again: finished stages and tuning trials are kept, nothing is redone."
    return "The pipeline failed. Fix the error and run again: finished stages are kept, none is redone."


def _data(batch: BatchReport) -> str:
    lines = [f"## Data added since {batch.since}", ""]
    if batch.now is None:
        return "\n".join([*lines, "No manifest: the segment stage has not run."])
    lines += ["| | before | now | added |", "| --- | ---: | ---: | ---: |"]
    before, now, added = batch.before, batch.now.to_dict(), batch.added.to_dict()  # type: ignore[union-attr]
    for key, label in (("samples", "samples"), ("fields", "fields"), ("cells", "cells"), ("ctcs", "CTCs")):
        old = "-" if before is None else f"{before.to_dict()[key]:,}"
        lines.append(f"| {label} | {old} | {now[key]:,} | {added[key]:+,} |")
    return "\n".join(lines)


def _stages(result: RetrainResult) -> str:
    unchanged = [stage for stage in result.stages if stage not in result.ran]
    lines = [f"## Stages: {len(result.ran)} of {len(result.stages)} re-ran", ""]
    lines.append(f"- re-ran: {', '.join(result.ran) or 'none (nothing changed)'}")
    lines.append(f"- unchanged: {', '.join(unchanged) or 'none'}")
    return "\n".join(lines)


def _gate(result: RetrainResult) -> str:
    if result.gate is None:
        return "## The gate\n\nDid not run in this retrain (no new challenger)."
    decision = result.gate.decision
    lines = [
        f"## The gate: {decision.get('action')}",
        "",
        f"| criterion | challenger v{decision.get('challenger')} "
        f"| champion {_v(decision.get('champion_before'))} | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for row in decision.get("criteria") or []:
        lines.append(
            f"| {row['name']} | {_value(row.get('challenger'))} | {_value(row.get('champion'))} "
            f"| {row.get('verdict', '')} |"
        )
    if decision.get("reason"):
        lines += ["", f"Reason: {decision['reason']}"]
    return "\n".join(lines)


def _metrics(result: RetrainResult) -> str:
    rows = [row for row in result.metrics if row.headline]
    lines = [f"## Metrics that changed since {result.batch.since}", ""]
    if not result.metrics:
        return "\n".join([*lines, "None."])
    if rows:
        lines += ["| file | metric | before | now | change |", "| --- | --- | ---: | ---: | ---: |"]
    else:
        lines.append("No headline metric changed.")
    for row in rows[:_METRIC_ROWS]:
        change = "" if row.change is None else f"{row.change:+.4g}"
        lines.append(f"| {row.path} | {row.metric} | {_value(row.old)} | {_value(row.new)} | {change} |")
    more = len(result.metrics) - min(len(rows), _METRIC_ROWS)
    if more:
        lines += ["", f"{more} more changed (per-fold figures, intervals): {RETRAIN_RECORD_FILE.as_posix()}, "
                  "`dvc metrics diff --all`"]
    return "\n".join(lines)


def _serving(serving: Serving) -> str:
    bento = f"; Bento `{serving.bento}`" if serving.bento else ""
    serves = f"{serving.model_name} {_v(serving.champion)} (alias champion){bento}"
    return f"## Serving\n\n{serves}. Start it: `ctcid serve`."


def _v(version: Any) -> str:
    return "none" if version in (None, "") else f"v{version}"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")
