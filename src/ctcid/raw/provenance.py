"""How simulated raw data was made and named, so that it follows ``simulate.*`` (docs/data.md#provenance).

``ctcid simulate`` records in ``<raw>/simulation.json`` the settings every sample it wrote was drawn
with: the seed, the channel order and ``simulate.*`` less the keys that change no sample
(``n_samples``, how many; ``workers``). :func:`raw_state` compares that record with params.yaml:

* ``missing``: no raw data yet;
* ``current``: every simulated sample was drawn with today's settings, and the simulation from sample
  0, if any, made ``simulate.n_samples`` of them (batches appended with ``--first-sample`` may add more);
* ``stale``: some were drawn otherwise, or ``n_samples`` changed: re-simulate (``make run`` does);
* ``mixed``: stale, and the folder also holds a lab's ingested samples, never overwritten;
* ``unrecorded``: no simulated sample on record (a lab's data, or data simulated before ctcid kept a
  record): ``simulate.*`` does not describe it and nothing is compared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctcid.config.simulate import SimulateConfig
from ctcid.errors import CtcidError
from ctcid.paths import SIMULATION_FILE

# simulate.* keys that change no sample: how many are made, and by how many processes
_NOT_DRAWN = ("n_samples", "workers")

State = Literal["missing", "current", "stale", "mixed", "unrecorded"]


def sample_id(number: int, prefix: str = "") -> str:
    """``S0000`` for sample 0; ``prefix`` sets another cohort's names apart (``same_site-S0000``).

    The name is only a label: sample ``number`` draws the same numbers whatever its prefix.
    """
    return f"{prefix}S{number:04d}"


def recipe(config: SimulateConfig) -> dict[str, Any]:
    """The settings a sample is drawn with, as recorded: JSON values under dotted keys, nested
    sections flattened (``simulate.artefacts.clumps_mean``) so that a difference names one knob."""
    drawn = {k: v for k, v in config.result_values().items() if k.removeprefix("simulate.") not in _NOT_DRAWN}
    return _flat(drawn)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Record:
    """``simulation.json``: each simulated sample's recipe (by digest) and the recipes themselves."""

    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    base: int = 0  # samples the last simulation from sample 0 made: simulate.n_samples then

    @classmethod
    def read(cls, raw_dir: Path) -> Record:
        path = Path(raw_dir) / SIMULATION_FILE
        if not path.is_file():
            return cls()
        try:
            values = json.loads(path.read_text())
            return cls(dict(values["recipes"]), dict(values["samples"]), int(values["base"]))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CtcidError(
                f"{path}: unreadable record of how the raw data was simulated ({error}); delete it and "
                f"re-simulate ('ctcid simulate --out {raw_dir}'), or delete it if the data is a lab's"
            ) from None

    def add(self, config: SimulateConfig, samples: list[str], first: int) -> None:
        """``samples`` were drawn with ``config``, from sample number ``first`` on."""
        values = recipe(config)
        digest = _digest(values)
        self.recipes[digest] = values
        self.samples.update(dict.fromkeys(samples, digest))
        if first == 0:
            self.base = len(samples)

    def write(self, raw_dir: Path) -> Path:
        used = set(self.samples.values())
        body = {
            "recipes": {key: value for key, value in sorted(self.recipes.items()) if key in used},
            "samples": dict(sorted(self.samples.items())),
            "base": self.base,
        }
        path = Path(raw_dir) / SIMULATION_FILE
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        return path


@dataclass(frozen=True)
class RawState:
    state: State
    differences: list[str]  # "simulate.gain: 2.0 -> 4.0", what the record and params.yaml disagree on
    ingested: list[str]  # sample folders no simulation made

    def message(self, raw_dir: Path) -> str:
        """What is wrong and what to do; empty when nothing is."""
        differs = "; ".join(self.differences[:8]) + (" ..." if len(self.differences) > 8 else "")
        if self.state == "stale":
            return (
                f"{raw_dir} was simulated with other settings than params.yaml ({differs}); 'make run' "
                f"re-simulates it, or run 'ctcid simulate --sync --out {raw_dir}' and 'dvc add {raw_dir}'"
            )
        if self.state == "mixed":
            shown = ", ".join(self.ingested[:5]) + (" ..." if len(self.ingested) > 5 else "")
            return (
                f"{raw_dir} was simulated with other settings than params.yaml ({differs}) and also "
                f"holds {len(self.ingested)} ingested samples ({shown}), which are never overwritten: "
                "restore those simulate.* values in params.yaml, or move the ingested samples out, "
                "re-simulate and ingest them again ('ctcid ingest')"
            )
        return ""


def sample_folders(raw_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(raw_dir).iterdir() if p.is_dir()) if Path(raw_dir).is_dir() else []


def raw_state(raw_dir: Path, config: SimulateConfig) -> RawState:
    """Where the training cohort's ``raw_dir`` stands against ``config``."""
    present = sample_folders(raw_dir)
    if not present:
        return RawState("missing", [], [])
    record = Record.read(raw_dir)
    simulated = [name for name in present if name in record.samples]
    ingested = [name for name in present if name not in record.samples]
    if not simulated:
        return RawState("unrecorded", [], ingested)
    wanted = recipe(config)
    differences: list[str] = []
    for digest in sorted({record.samples[name] for name in simulated}):
        drawn = record.recipes.get(digest, {})
        for key in sorted(set(drawn) | set(wanted)):
            if drawn.get(key) != wanted.get(key) and not any(d.startswith(f"{key}:") for d in differences):
                differences.append(f"{key}: {_short(drawn.get(key))} -> {_short(wanted.get(key))}")
    # n_samples holds a folder made from S0000 on; one of appended batches alone has no count to follow
    count = config.simulate.n_samples
    missing = [sample_id(k) for k in range(count) if sample_id(k) not in simulated]
    if record.base and (missing or record.base != count):
        differences.append(f"simulate.n_samples: {record.base} -> {count}")
    if not differences:
        return RawState("current", [], ingested)
    return RawState("mixed" if ingested else "stale", differences, ingested)


def _short(value: Any) -> str:
    text = json.dumps(value) if value is not None else "unset"
    return text if len(text) <= 60 else text[:57] + "..."
