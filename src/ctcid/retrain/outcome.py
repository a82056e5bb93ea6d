"""What a retrain did, as a word and an exit status (scripts and CI branch on the status)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["promoted", "kept", "failed", "interrupted"]
# 0: a new champion is registered and packaged; 3: the champion stays (no new data, or the gate
# refused the challenger): both are successful runs. 1: something failed; 130: Ctrl+C.
EXIT_STATUS: dict[Outcome, int] = {"promoted": 0, "kept": 3, "failed": 1, "interrupted": 130}
HEADLINE: dict[Outcome, str] = {
    "promoted": "new champion",
    "kept": "champion kept",
    "failed": "failed",
    "interrupted": "interrupted",
}


@dataclass(frozen=True)
class GateResult:
    """The promote stage's decision (reports/promotion.json), when it ran in this retrain."""

    decision: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> GateResult | None:
        return cls(json.loads(path.read_text())) if path.exists() else None

    @property
    def moved(self) -> bool:
        return self.decision.get("champion_before") != self.decision.get("champion_after")

    @property
    def promoted(self) -> bool:
        return self.decision.get("action") in ("promoted", "forced") and self.moved


def decide(error: str | None, interrupted: bool, gate_ran: bool, gate: GateResult | None) -> Outcome:
    if interrupted:
        return "interrupted"
    if error:
        return "failed"
    if gate_ran and gate is not None and gate.promoted:
        return "promoted"
    return "kept"
