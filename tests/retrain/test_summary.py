"""reports/retrain_summary.md and reports/retrain.json of each outcome, from hand-made results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ctcid.retrain.baseline import Baseline
from ctcid.retrain.batch import BatchReport, DataStats
from ctcid.retrain.changes import MetricChange
from ctcid.retrain.outcome import GateResult, Outcome
from ctcid.retrain.summary import RetrainResult, Serving, render

STAGES = [
    "segment", "validate", "split", "tune@resnet18", "tune@alexnet", "train@resnet18", "train@alexnet",
    "evaluate", "register", "promote", "package",
]
BEFORE, NOW = DataStats(14, 28, 1398, 100), DataStats(16, 32, 1462, 110)
MODEL = "ctcid-classifier"


def criterion(name: str, challenger: Any, champion: Any, passed: bool | None) -> dict[str, Any]:
    verdict = {True: "pass", False: "FAIL", None: "-"}[passed]
    return {
        "name": name, "challenger": challenger, "champion": champion, "passed": passed, "verdict": verdict
    }


def decision(action: str, before: str | None, after: str | None, failed: list[str] | None = None,
             reason: str = "") -> GateResult:
    """The shape of reports/promotion.json (ctcid.registry.promote.Decision.to_dict)."""
    return GateResult({
        "action": action, "model_name": MODEL, "challenger": "3", "champion_before": before,
        "champion_after": after, "reason": reason, "by": "ci@runner", "at": "2026-11-26T17:11:00",
        "promoted": int(action in ("promoted", "forced")), "failed": failed or [],
        "criteria": [
            criterion("auc - champion's >= 0", 0.99412, 0.9584, True),
            criterion("specificity >= 0.9", 0.85, 0.93, "specificity >= 0.9" not in (failed or [])),
            criterion("behaviour: dihedral invariance", "change 0.04 | same call 0.96", None, None),
        ],
    })


def result(
    outcome: Outcome, *, ran: list[str] | None = None, gate: GateResult | None = None,
    metrics: list[MetricChange] | None = None, champion: str | None = "2", **extra: Any,
) -> RetrainResult:
    return RetrainResult(
        outcome=outcome, started="2026-11-26 17:10 UTC", seconds=86.4,
        commit="16a3478290f442c68c1a173d88912ce50aab58fa",
        batch=extra.pop("batch", BatchReport("HEAD", BEFORE, NOW)),
        stages=STAGES, ran=STAGES if ran is None else ran, gate=gate, metrics=metrics or [],
        next_baseline=Baseline(
            "the last retrain (2026-11-26 17:10 UTC)", NOW, {"reports/metrics.json": {"a": 1}}
        ),
        serving=Serving(MODEL, champion, "ctcid-classifier-service:osqmplhjxs34iax4" if champion else None),
        **extra,
    )


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_promoted() -> None:
    text = render(result("promoted", gate=decision("promoted", "2", "3"), champion="3"))
    assert text.startswith("# ctcid retrain: new champion\n")
    assert "2026-11-26 17:10 UTC · commit `16a3478290` · 1 min 26 s · exit status 0 (promoted)" in text
    assert "**ctcid-classifier v3 is the new champion (was v2).**" in text
    assert "## The gate: promoted" in lines(text)
    assert "| criterion | challenger v3 | champion v2 | verdict |" in lines(text)
    assert "| auc - champion's >= 0 | 0.9941 | 0.9584 | pass |" in lines(text)
    assert "| specificity >= 0.9 | 0.85 | 0.93 | pass |" in lines(text)
    # a value with a '|' cannot break the table; a missing one is '-'
    assert "| behaviour: dihedral invariance | change 0.04 / same call 0.96 | - | - |" in lines(text)
    assert "## Stages: 11 of 11 re-ran" in lines(text)
    assert "- unchanged: none" in lines(text)
    assert ("ctcid-classifier v3 (alias champion); Bento `ctcid-classifier-service:osqmplhjxs34iax4`. "
            "Start it: `ctcid serve`.") in lines(text)
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_the_first_champion() -> None:
    text = render(result("promoted", gate=decision("promoted", None, "1"), champion="1"))
    assert "**ctcid-classifier v1 is the new champion (was none).**" in text
    assert "| criterion | challenger v3 | champion none | verdict |" in lines(text)


def test_data_table() -> None:
    text = render(result("promoted", gate=decision("promoted", "2", "3")))
    table = lines(text)[lines(text).index("## Data added since HEAD"):][:7]
    assert table == [
        "## Data added since HEAD",
        "",
        "| | before | now | added |",
        "| --- | ---: | ---: | ---: |",
        "| samples | 14 | 16 | +2 |",
        "| fields | 28 | 32 | +4 |",
        "| cells | 1,398 | 1,462 | +64 |",
    ]
    assert "| CTCs | 100 | 110 | +10 |" in lines(text)


def test_data_without_a_before_or_a_manifest() -> None:
    first = render(
        result("promoted", gate=decision("promoted", None, "1"), batch=BatchReport("HEAD", None, NOW))
    )
    assert "| cells | - | 1,462 | +1,462 |" in lines(first)
    none = render(result("failed", ran=[], error="boom", batch=BatchReport("HEAD", None, None)))
    assert "No manifest: the segment stage has not run." in lines(none)


def test_kept_by_a_refusal() -> None:
    refused = decision("refused", "2", "2", failed=["specificity >= 0.9"])
    text = render(result("kept", ran=STAGES[:-1], gate=refused))
    assert text.startswith("# ctcid retrain: champion kept\n")
    assert "exit status 3 (kept)" in text
    assert "**The gate refused challenger v3: specificity >= 0.9; ctcid-classifier stays at v2.**" in text
    assert "## The gate: refused" in lines(text)
    assert "| specificity >= 0.9 | 0.85 | 0.93 | FAIL |" in lines(text)
    assert "## Stages: 10 of 11 re-ran" in lines(text)
    assert "- unchanged: package" in lines(text)


def test_a_refusal_without_failed_criteria_gives_the_reason() -> None:
    refused = decision("refused", "2", "2", reason="version 3 was rolled back before")
    text = render(result("kept", gate=refused))
    assert "The gate refused challenger v3: version 3 was rolled back before;" in text
    assert "Reason: version 3 was rolled back before" in lines(text)


def test_kept_with_nothing_new() -> None:
    text = render(result("kept", ran=[], batch=BatchReport("HEAD", NOW, NOW)))
    assert "**Nothing new reached the gate. ctcid-classifier stays at v2.**" in text
    assert "## Stages: 0 of 11 re-ran" in lines(text)
    assert "- re-ran: none (nothing changed)" in lines(text)
    assert f"- unchanged: {', '.join(STAGES)}" in lines(text)
    assert "Did not run in this retrain (no new challenger)." in lines(text)
    assert "| samples | 16 | 16 | +0 |" in lines(text)
    metrics = lines(text)[lines(text).index("## Metrics that changed since HEAD"):]
    assert metrics[:3] == ["## Metrics that changed since HEAD", "", "None."]


def test_kept_with_no_champion_at_all() -> None:
    text = render(result("kept", ran=[], champion=None))
    assert "**Nothing new reached the gate. ctcid-classifier stays at none.**" in text
    assert "ctcid-classifier none (alias champion). Start it: `ctcid serve`." in lines(text)


def test_failed() -> None:
    error = "dvc repro exited with status 255 (its output above names the stage)"
    text = render(result("failed", ran=["segment", "validate"], error=error,
                         notes=["dvc pull exited with status 1: outputs missing locally are recomputed"]))
    assert text.startswith("# ctcid retrain: failed\n")
    assert "exit status 1 (failed)" in text
    assert f"Error: {error}" in lines(text)
    assert "- dvc pull exited with status 1: outputs missing locally are recomputed" in lines(text)
    assert "**The pipeline failed. Fix the error and run again" in text
    assert "- re-ran: segment, validate" in lines(text)


def test_interrupted() -> None:
    text = render(result("interrupted", ran=["segment"]))
    assert text.startswith("# ctcid retrain: interrupted\n")
    assert "exit status 130 (interrupted)" in text
    assert "**Interrupted. Run it again: finished stages and tuning trials are kept" in text
    assert "## Stages: 1 of 11 re-ran" in lines(text)


def test_only_headline_metrics_are_listed_and_the_rest_counted() -> None:
    metrics = [
        MetricChange("reports/metrics.json", "models.resnet18.operating.auc", 0.99, 0.994),
        MetricChange("reports/metrics.json", "models.resnet18.ci95.auc.low", 0.98, 0.981),  # not a headline
        MetricChange("reports/metrics.json", "models.resnet18.operating.tp", 66, 67),  # not a headline
        MetricChange("reports/segmentation.json", "true_ctc", 100, 110),
        MetricChange("reports/tune/resnet18.json", "best.value", None, 0.97),
        MetricChange("reports/validation.json", "stats.ctc_share", 0.05, "n/a"),
    ]
    text = render(result("promoted", gate=decision("promoted", "2", "3"), metrics=metrics))
    assert "## Metrics that changed since HEAD" in lines(text)
    assert "| file | metric | before | now | change |" in lines(text)
    assert "| reports/metrics.json | models.resnet18.operating.auc | 0.99 | 0.994 | +0.004 |" in lines(text)
    assert "| reports/segmentation.json | true_ctc | 100 | 110 | +10 |" in lines(text)
    assert "| reports/tune/resnet18.json | best.value | - | 0.97 |  |" in lines(text)
    assert "| reports/validation.json | stats.ctc_share | 0.05 | n/a |  |" in lines(text)
    assert "ci95" not in text and "operating.tp" not in text
    assert ("2 more changed (per-fold figures, intervals): reports/retrain.json, `dvc metrics diff --all`"
            in lines(text))


def test_at_most_40_metric_rows() -> None:
    metrics = [MetricChange(f"reports/tune/m{i:02d}.json", "best.value", 0.5, 0.6) for i in range(45)]
    metrics += [MetricChange("reports/metrics.json", f"models.x.fold{i}.auc", 0.5, 0.6) for i in range(3)]
    text = render(result("kept", gate=decision("refused", "2", "2", failed=["specificity >= 0.9"]),
                         metrics=metrics))
    rows = [line for line in lines(text) if line.startswith("| reports/")]
    assert len(rows) == 40 and rows[-1].startswith("| reports/tune/m39.json |")
    more = "8 more changed (per-fold figures, intervals): reports/retrain.json, `dvc metrics diff --all`"
    assert more in lines(text)


def test_no_more_line_when_every_change_is_listed() -> None:
    metrics = [MetricChange("reports/segmentation.json", "fields", 28, 32)]
    text = render(result("kept", ran=[], metrics=metrics))
    assert "| reports/segmentation.json | fields | 28 | 32 | +4 |" in lines(text)
    assert "more changed" not in text


def test_sections_in_order() -> None:
    text = render(result("promoted", gate=decision("promoted", "2", "3"),
                         metrics=[MetricChange("reports/segmentation.json", "fields", 28, 32)]))
    heads = [line for line in lines(text) if line.startswith("#")]
    assert heads == [
        "# ctcid retrain: new champion", "## Data added since HEAD", "## Stages: 11 of 11 re-ran",
        "## The gate: promoted", "## Metrics that changed since HEAD", "## Serving",
    ]


def test_write_both_files(tmp_path: Path) -> None:
    metrics = [MetricChange("reports/segmentation.json", "fields", 28, 32),
               MetricChange("reports/metrics.json", "models.resnet18.ci95.auc.low", 0.98, 0.981)]
    done = result("kept", ran=["segment", "validate"], gate=decision("refused", "2", "2"), metrics=metrics)
    summary, record = tmp_path / "out" / "retrain_summary.md", tmp_path / "other" / "retrain.json"
    done.write(summary, record)
    assert summary.read_text() == render(done)
    written = json.loads(record.read_text())
    assert written["outcome"] == "kept" and written["exit_status"] == 3 and written["seconds"] == 86.4
    assert written["stages_run"] == ["segment", "validate"]
    assert written["stages_unchanged"] == STAGES[2:]
    assert written["gate"]["action"] == "refused"
    assert written["data"]["added"] == {"samples": 2, "fields": 4, "cells": 64, "ctcs": 10}
    assert [row["metric"] for row in written["metrics_changed"]] == ["fields", "models.resnet18.ci95.auc.low"]
    assert written["metrics_changed"][0]["diff"] == 4
    assert written["serving"] == {"model_name": MODEL, "champion": "2",
                                  "bento": "ctcid-classifier-service:osqmplhjxs34iax4"}
    # what the next retrain compares with, read back as it will be
    assert written["next_baseline"] == {
        "label": "the last retrain (2026-11-26 17:10 UTC)",
        "data": {"samples": 16, "fields": 32, "cells": 1462, "ctcs": 110},
        "metrics": {"reports/metrics.json": {"a": 1}},
        "rev": None,
        "lock": None,
    }
    assert Baseline.from_dict(written["next_baseline"]) == done.next_baseline
