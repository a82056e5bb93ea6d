"""scripts/results_tables.py: the published tables come from one run's reports, or from none."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BLOCK = "intro\n<!-- results:begin -->\nold 9.99\n<!-- results:end -->\nafter\n"
STAMP = {"commit": "a" * 40, "date": "2026-12-06T10:00:00+00:00"}


def load_script():
    spec = importlib.util.spec_from_file_location("results_tables", REPO / "scripts" / "results_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model(mae: float, label: str | None = None, versus: bool = True) -> dict:
    values = {"endpoints": {"mae": mae, "sensitivity_ge1": 0.9, "prevalence_ge1": 0.6, "lob": 1.0},
              "endpoints_ci95": {"mae": {"low": mae - 0.1, "high": mae + 0.2}},
              "review": {"patients": 3.0, "detections_median": 100.0, "flagged_median": 4.0}}
    values["operating"] = {"sensitivity": 0.98, "specificity": 0.995, "threshold": 0.5}
    values["ci95"] = {"sensitivity": {"low": 0.9, "high": 1.0}, "specificity": {"low": 0.99, "high": 0.999}}
    if versus:
        values["versus_rule"] = {"mae_difference": mae - 0.5, "mae_difference_p": 0.04}
    if label:
        values["label"] = label
    return values


def cohort() -> dict:
    return {"samples": 3, "ctc": 7, "labelled": 300,
            "models": {"champion": model(1.25, "champion (v1)"), "rule": model(0.5, versus=False)}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    reports = {
        "reports/metrics.json": {"selected": "resnet18", "run": STAMP,
                                 "test": {"samples": 20, "ctc": 69, "cells": 1629},
                                 "models": {"resnet18": model(1.5), "rule": model(0.5, versus=False)}},
        "reports/external.json": {"run": STAMP, "cohorts": {"same_site": cohort()}},
        "reports/audit.json": {"run": STAMP, "cohorts": {"holdout": cohort()}},
        "reports/promotion.json": {"action": "promoted", "failed": []},
    }
    outs = []
    for name, content in reports.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
        outs.append({"path": name, "md5": hashlib.md5(path.read_bytes()).hexdigest()})
    # the test detections' scores: of the 4 CTC-sized CD45-negative diploid cells, 1 is called
    predictions = tmp_path / "reports/test_predictions.csv"
    predictions.write_text("crop_index,resnet18\n0,0.9\n1,0.2\n2,0.6\n3,0.1\n4,0.3\n5,0.1\n")
    digest = hashlib.md5(predictions.read_bytes()).hexdigest()
    outs.append({"path": "reports/test_predictions.csv", "md5": digest})
    (tmp_path / "data/segment").mkdir(parents=True)
    pd.DataFrame({
        "crop_index": range(6),
        "true_cell_type": ["ctc"] + ["diploid_cd45neg"] * 4 + ["ctc"],
        "area": [300.0, 300.0, 310.0, 320.0, 330.0, 300.0],
    }).to_parquet(tmp_path / "data/segment/manifest.parquet")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"all": {"outs": outs}}}))
    for target in ("README.md", "docs/results.md"):
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target).write_text(BLOCK)
    return tmp_path


def test_the_blocks_are_filled_from_the_reports_with_their_commit(project: Path) -> None:
    script = load_script()
    assert script.main(["--root", str(project), "--docs", str(project), "--write"]) == 0
    for target in ("README.md", "docs/results.md"):
        text = (project / target).read_text()
        assert text.startswith(BLOCK[:28]) and text.endswith(BLOCK[-27:])
        assert "old 9.99" not in text and "a" * 40 in text
        assert "1.50 [1.40, 1.70]" in text  # the selected model's test MAE with its interval
        assert "Sealed cohort `holdout`" in text and "champion (v1)" in text
        assert "0.75 (p 0.040)" in text  # the same-site champion's MAE minus the rule's


def test_a_report_that_is_not_the_locked_output_is_refused(project: Path, capsys) -> None:
    script = load_script()
    external = project / "reports/external.json"
    external.write_text(external.read_text().replace("1.25", "0.25"))  # edited, or from another run
    assert script.main(["--root", str(project), "--docs", str(project), "--write"]) == 1
    assert "reports/external.json is not the output dvc.lock records" in capsys.readouterr().err
    assert "old 9.99" in (project / "README.md").read_text()  # nothing written


def test_reports_from_two_commits_are_refused(project: Path, capsys) -> None:
    script = load_script()
    audit = project / "reports/audit.json"
    audit.write_text(audit.read_text().replace("a" * 40, "b" * 40))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for out in lock["stages"]["all"]["outs"]:
        if out["path"] == "reports/audit.json":
            out["md5"] = hashlib.md5(audit.read_bytes()).hexdigest()
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert script.main(["--root", str(project)]) == 1
    assert "different commits" in capsys.readouterr().err


def test_the_targets_are_each_met_or_missed_from_the_same_reports(project: Path) -> None:
    block = load_script().render(project)
    assert "| test sensitivity >= 0.97 (`resnet18`) | 0.980 [0.900, 1.000] | met |" in block
    assert "diploid test cells called CTC <= 10 % | 0.250 of 4 | **missed** |" in block
    # the champion counts 1.25 per patient against the rule's 0.5 on the sealed cohort
    assert "| holdout (sealed): patient MAE <= rule's" in block and "MAE 1.25 vs 0.50" in block
    assert block.count("**missed**, met |") >= 2
