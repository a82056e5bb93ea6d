"""The retrain's outcome word and exit status, and what counts as a promotion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctcid.retrain.outcome import EXIT_STATUS, HEADLINE, GateResult, decide


def gate(action: str, before: str | None, after: str | None) -> GateResult:
    return GateResult(
        {"action": action, "challenger": "3", "champion_before": before, "champion_after": after}
    )


def test_exit_status_of_every_outcome() -> None:
    # scripts and .github/workflows/retrain.yml branch on these
    assert EXIT_STATUS == {"promoted": 0, "kept": 3, "failed": 1, "interrupted": 130}
    assert set(HEADLINE) == set(EXIT_STATUS)


@pytest.mark.parametrize(
    ("decision", "promoted"),
    [
        (gate("promoted", "2", "3"), True),
        (gate("promoted", None, "1"), True),  # the first champion
        (gate("forced", "2", "3"), True),
        (gate("refused", "2", "2"), False),
        (gate("kept", "3", "3"), False),  # the challenger is the champion already
        (gate("promoted", "3", "3"), False),  # nothing moved
        (gate("rolled_back", "3", "2"), False),
    ],
)
def test_promoted_needs_a_promoting_action_that_moved_the_champion(
    decision: GateResult, promoted: bool
) -> None:
    assert decision.promoted is promoted


def test_read_promotion_json_or_none(tmp_path: Path) -> None:
    path = tmp_path / "promotion.json"
    assert GateResult.read(path) is None
    path.write_text(json.dumps({"action": "refused", "champion_before": "2", "champion_after": "2"}))
    read = GateResult.read(path)
    assert read is not None and read.decision["action"] == "refused" and not read.moved


@pytest.mark.parametrize(
    ("error", "interrupted", "gate_ran", "result", "outcome"),
    [
        (None, False, True, gate("promoted", "2", "3"), "promoted"),
        (None, False, True, gate("forced", "2", "3"), "promoted"),
        (None, False, True, gate("refused", "2", "2"), "kept"),
        (None, False, True, gate("kept", "3", "3"), "kept"),
        (None, False, False, None, "kept"),  # nothing new reached the gate
        (None, False, True, None, "kept"),  # the stage ran but left no decision
        (None, False, False, gate("promoted", "2", "3"), "kept"),  # an old promotion.json is not this run's
        ("dvc repro exited with status 1", False, True, gate("promoted", "2", "3"), "failed"),
        ("dvc repro exited with status 1", False, False, None, "failed"),
        (None, True, False, None, "interrupted"),
        ("dvc repro exited with status 1", True, True, gate("promoted", "2", "3"), "interrupted"),
    ],
)
def test_decide(
    error: str | None, interrupted: bool, gate_ran: bool, result: GateResult | None, outcome: str
) -> None:
    assert decide(error, interrupted, gate_ran, result) == outcome
