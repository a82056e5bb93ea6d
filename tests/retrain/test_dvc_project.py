"""The parts of a retrain that ask DVC and git, run for real in a tiny throw-away project.

The project has two stages, ``segment`` (writes data/segment/manifest.parquet and a metrics file, as
the real segment stage's outputs are named) and a matrix stage ``score@a``, ``score@b``; its git
history is one commit without a dvc.lock and one with. :func:`changed` is a copy in which a
retrain has since rewritten the manifest and a metric, uncommitted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctcid.offline import OFFLINE_ENVIRONMENT
from ctcid.retrain.baseline import Baseline, resolve
from ctcid.retrain.batch import DataStats, stats_at, stats_now
from ctcid.retrain.changes import MetricChange, metrics_diff, metrics_now
from ctcid.retrain.stages import lock_entries, lock_entries_at, pipeline_stages

BIN = Path(sys.executable).parent  # dvc comes with the project, next to the interpreter
DVC = str(BIN / "dvc")
MANIFEST = Path("data/segment/manifest.parquet")
METRICS = "reports/metrics.json"

# 3 samples, 4 fields, 5 cells, 2 annotated CTCs (one cell unlabelled)
SEGMENT = """\
import json, pathlib, pandas as pd
pathlib.Path("data/segment").mkdir(parents=True, exist_ok=True)
pathlib.Path("reports").mkdir(exist_ok=True)
pd.DataFrame({
    "sample": ["S0", "S0", "S0", "S1", "S2"],
    "field": ["f0", "f0", "f1", "f0", "f0"],
    "true_label": pd.array([1, 0, None, 1, 0], dtype="Int8"),
}).to_parquet("data/segment/manifest.parquet", index=False)
json.dump({"models": {"resnet18": {"operating": {"auc": 0.9, "sensitivity": 0.95}}},
           "criteria": [{"name": "auc"}], "note": "ok"}, open("reports/metrics.json", "w"))
"""
SCORE = 'import json, sys; json.dump({"value": 1}, open(f"reports/aux/{sys.argv[1]}.json", "w"))\n'
DVC_YAML = """\
stages:
  segment:
    cmd: python segment.py
    deps:
      - segment.py
    outs:
      - data/segment
    metrics:
      - reports/metrics.json
  score:
    matrix:
      name: [a, b]
    cmd: python score.py ${item.name}
    deps:
      - score.py
      - reports/metrics.json
    metrics:
      - reports/aux/${item.name}.json
"""
FIRST = DataStats(samples=3, fields=4, cells=5, ctcs=2)
FIRST_METRICS = {
    METRICS: {
        "models.resnet18.operating.auc": 0.9, "models.resnet18.operating.sensitivity": 0.95, "note": "ok"
    },
    "reports/aux/a.json": {"value": 1},
    "reports/aux/b.json": {"value": 1},
}


def environment() -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENVIRONMENT}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the stages' `python` has pandas
    env.update(GIT_AUTHOR_NAME="ctcid", GIT_AUTHOR_EMAIL="ctcid@example.org")
    env.update(GIT_COMMITTER_NAME="ctcid", GIT_COMMITTER_EMAIL="ctcid@example.org")
    return env


def run(cwd: Path, *args: str) -> None:
    done = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrain_project")
    (root / "segment.py").write_text(SEGMENT)
    (root / "score.py").write_text(SCORE)
    (root / "reports" / "aux").mkdir(parents=True)
    (root / "dvc.yaml").write_text(DVC_YAML)
    run(root, "git", "init", "-q")
    run(root, DVC, "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "sources, no dvc.lock yet")
    run(root, DVC, "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "dvc.lock")
    return root


@pytest.fixture(scope="module")
def changed(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy whose workspace a retrain has changed since HEAD: 2 samples more, a better AUC."""
    root = shutil.copytree(project, tmp_path_factory.mktemp("retrain_changed") / "project", symlinks=True)
    manifest = pd.read_parquet(root / MANIFEST)
    extra = pd.DataFrame({"sample": ["S3", "S4", "S4"], "field": ["f0", "f0", "f0"],
                          "true_label": pd.array([1, 1, 0], dtype="Int8")})
    (root / MANIFEST).unlink()  # never write through a link into DVC's cache
    pd.concat([manifest, extra], ignore_index=True).to_parquet(root / MANIFEST, index=False)
    metrics = json.loads((root / METRICS).read_text())
    metrics["models"]["resnet18"]["operating"]["auc"] = 0.95
    (root / METRICS).unlink()
    (root / METRICS).write_text(json.dumps(metrics))
    return root


def test_stages_are_listed_with_the_matrix_expanded(project: Path) -> None:
    assert pipeline_stages(project, DVC) == ["segment", "score@a", "score@b"]
    assert list(lock_entries(project)) == ["segment", "score@a", "score@b"]


def test_metrics_now_flattens_each_file_and_leaves_out_lists(project: Path) -> None:
    assert metrics_now(project, DVC) == FIRST_METRICS


def test_metrics_diff_against_recorded_metrics(project: Path) -> None:
    before = {
        METRICS: {"models.resnet18.operating.auc": 0.8, "models.resnet18.operating.sensitivity": 0.95,
                  "note": "was"},
        "reports/aux/a.json": {"value": 1},
        # reports/aux/b.json is new
    }
    rows = metrics_diff(project, None, before, DVC)
    # reports/metrics.json comes first although reports/aux sorts before it; unchanged rows are left out
    assert rows == [
        MetricChange(METRICS, "models.resnet18.operating.auc", 0.8, 0.9),
        MetricChange(METRICS, "note", "was", "ok"),
        MetricChange("reports/aux/b.json", "value", None, 1),
    ]
    assert metrics_diff(project, None, FIRST_METRICS, DVC) == []


def test_metrics_diff_against_a_revision(changed: Path) -> None:
    assert metrics_diff(changed, "HEAD", None, DVC) == [
        MetricChange(METRICS, "models.resnet18.operating.auc", 0.9, 0.95)
    ]
    assert metrics_diff(changed, None, None, DVC) == metrics_diff(changed, "HEAD", None, DVC)


def test_stats_now_and_at_a_revision(changed: Path) -> None:
    assert stats_now(changed) == DataStats(samples=5, fields=6, cells=8, ctcs=4)
    assert stats_at(changed, "HEAD") == (FIRST, "")  # read through DVC's cache, not the workspace
    data, note = stats_at(changed, "HEAD~1")
    assert data is None and "HEAD~1" in note


def head_baseline(repo: Path) -> Baseline:
    """HEAD's baseline: its manifest, its metrics through 'dvc metrics diff HEAD', its dvc.lock."""
    lock = lock_entries_at(repo, "HEAD")
    assert lock is not None and "segment" in lock
    return Baseline("HEAD", FIRST, None, rev="HEAD", lock=lock)


def test_a_revision_without_dvc_lock_has_no_entries(changed: Path) -> None:
    assert lock_entries_at(changed, "HEAD~1") is None
    assert lock_entries_at(changed, "no-such-revision") is None


def test_without_record_the_baseline_is_heads_lock(changed: Path, tmp_path: Path) -> None:
    baseline = resolve(changed, None, tmp_path / "retrain.json", DVC)
    # HEAD's manifest, and its metrics through 'dvc metrics diff HEAD' (None here)
    assert baseline == head_baseline(changed)


def test_since_names_the_revision(changed: Path, tmp_path: Path) -> None:
    record = tmp_path / "retrain.json"
    record.write_text(json.dumps({"next_baseline": Baseline("the last retrain", FIRST, {}).to_dict()}))
    assert resolve(changed, "HEAD", record, DVC) == head_baseline(changed)
    # a revision without the manifest in its dvc.lock: the workspace, and the label says why
    older = resolve(changed, "HEAD~1", tmp_path / "none.json", DVC)
    assert older.label.startswith("this workspace before the run (") and "HEAD~1" in older.label
    assert older.data == stats_now(changed) and older.rev is None


def test_without_record_or_commit_the_baseline_is_the_workspace(
    project: Path, tmp_path: Path
) -> None:
    fresh = shutil.copytree(project, tmp_path / "fresh", symlinks=True)
    shutil.rmtree(fresh / ".git")
    run(fresh, "git", "init", "-q")  # no commit: HEAD names nothing
    baseline = resolve(fresh, None, fresh / "reports" / "retrain.json", DVC)
    assert baseline.label.startswith("this workspace before the run (")
    assert baseline.data == FIRST
    assert baseline.metrics == FIRST_METRICS  # recorded now: the diff after the run compares with them
    assert baseline.rev is None


def test_the_last_retrains_record_is_the_baseline(changed: Path, tmp_path: Path) -> None:
    last = Baseline("the last retrain (2026-11-26 17:13 UTC)", DataStats(4, 5, 6, 3), FIRST_METRICS)
    record = tmp_path / "retrain.json"
    record.write_text(json.dumps({"outcome": "kept", "next_baseline": last.to_dict()}))
    assert resolve(changed, None, record, DVC) == last


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"outcome": "failed"}),  # no next_baseline
        json.dumps({"next_baseline": None}),
        json.dumps({"next_baseline": {"data": None}}),  # no label
        json.dumps({"next_baseline": {"label": "x", "data": {"samples": 1, "cells": 2}}}),  # bad data
    ],
)
def test_an_unusable_record_falls_back_to_head(changed: Path, tmp_path: Path, text: str) -> None:
    record = tmp_path / "retrain.json"
    record.write_text(text)
    assert resolve(changed, None, record, DVC) == head_baseline(changed)
