"""Which stages a dvc repro re-ran, from dvc.lock before and after."""

from __future__ import annotations

from pathlib import Path

import yaml

from ctcid.retrain.stages import changed_stages, lock_entries


def entry(md5: str) -> dict[str, object]:
    return {"cmd": "ctcid step", "deps": [{"path": "data/raw", "hash": "md5", "md5": md5}]}


def write_lock(root: Path, stages: dict[str, object]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False))
    return root


def test_no_lock_means_no_entries(tmp_path: Path) -> None:
    assert lock_entries(tmp_path) == {}


def test_entries_follow_the_lock_and_ignore_key_order(tmp_path: Path) -> None:
    first = write_lock(tmp_path / "a", {"segment": entry("1"), "tune@resnet18": entry("2")})
    reordered = {"tune@resnet18": {"deps": entry("2")["deps"], "cmd": "ctcid step"}, "segment": entry("1")}
    second = write_lock(tmp_path / "b", reordered)
    assert list(lock_entries(first)) == ["segment", "tune@resnet18"]
    assert lock_entries(first) == lock_entries(second)  # same content, keys in another order


def test_new_and_changed_stages_are_named_in_the_lock_order(tmp_path: Path) -> None:
    before = lock_entries(write_lock(tmp_path / "before", {
        "segment": entry("1"), "validate": entry("2"), "train@resnet18": entry("3"), "evaluate": entry("4"),
    }))
    after = lock_entries(write_lock(tmp_path / "after", {
        "segment": entry("1x"),          # changed
        "validate": entry("2"),          # unchanged
        "train@alexnet": entry("5"),     # new
        "train@resnet18": entry("3"),    # unchanged
        "evaluate": entry("4x"),         # changed
        "register": entry("6"),          # new
    }))
    assert changed_stages(before, after) == ["segment", "train@alexnet", "evaluate", "register"]


def test_nothing_changed_and_a_first_run(tmp_path: Path) -> None:
    lock = lock_entries(write_lock(tmp_path, {"segment": entry("1"), "split": entry("2")}))
    assert changed_stages(lock, lock) == []
    assert changed_stages({}, lock) == ["segment", "split"]


def test_an_empty_lock_file_has_no_entries(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text("")
    assert lock_entries(tmp_path) == {}


def test_the_gate_counts_when_it_ran_in_this_run_or_since_the_baseline() -> None:
    from ctcid.retrain.run import gate_ran

    baseline = {"segment": "a", "promote": "p1"}
    promoted_before_the_kill = {"segment": "b", "promote": "p2", "package": "k2"}
    # this run only re-ran package, but promote had run since the baseline: its decision counts
    assert gate_ran(["package"], baseline, promoted_before_the_kill)
    assert gate_ran(["promote"], None, promoted_before_the_kill)
    # nothing new since the baseline: the gate did not decide anything in this batch
    assert not gate_ran([], {"segment": "b", "promote": "p2"}, {"segment": "b", "promote": "p2"})
    assert not gate_ran(["segment"], None, {"segment": "c", "promote": "p2"})
