"""``ctcid simulate --sync``: make simulated raw data follow params.yaml (docs/data.md#provenance)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ctcid.config.simulate import SimulateConfig
from ctcid.errors import CtcidError
from ctcid.raw.provenance import raw_state
from ctcid.raw.simulate import SampleSummary, simulate_dataset


def sync_raw(
    raw_dir: Path, params: SimulateConfig, workers: int | None = None, show_progress: bool = True
) -> tuple[str, list[SampleSummary]]:
    """Simulate ``raw_dir`` when it is missing or was simulated otherwise; say what was done.

    A lab's ingested samples are never overwritten: when simulated data beside them is stale, this
    raises a CtcidError saying what differs and what to do.
    """
    raw_dir, params = Path(raw_dir), SimulateConfig.project(params)
    state = raw_state(raw_dir, params)
    if state.state == "current":
        return f"{raw_dir} is current: simulated with params.yaml's seed and simulate.* settings", []
    if state.state == "unrecorded":
        return (
            f"{raw_dir} holds {len(state.ingested)} samples that ctcid did not simulate (ingested, or "
            "simulated before it kept a record): left as they are, simulate.* does not describe them"
        ), []
    if state.state == "mixed":
        raise CtcidError(state.message(raw_dir))
    if state.state == "stale":
        shutil.rmtree(raw_dir)  # in the DVC cache still (data/raw.dvc), and every sample is simulated
        done = f"re-simulated {raw_dir}: {'; '.join(state.differences)}"
    else:
        done = f"simulated {raw_dir}"
    return done, simulate_dataset(params, raw_dir, workers=workers, show_progress=show_progress)
