"""The promotion gate, and rollback: who may become ``champion``, decided on today's test set.

:func:`promote` scores the ``challenger`` and the current ``champion`` on the **same current** test
set (a champion's stored numbers may come from older data), then applies ``params.registry``:

* guard-rails on the challenger at its operating threshold: sensitivity, specificity, and the
  per-patient count error;
* the behavioural checks (:mod:`.behaviour`) on probes made from the test crops;
* against the champion: ``primary_metric`` must improve by at least ``min_improvement``;
* a version once rolled back is not promoted again by the gate.

With no champion, the first challenger that passes the guard-rails becomes champion. ``force``
overrides a refusal and records who and why. Every decision is a :class:`Decision`: tags on the
versions and ``reports/promotion.json``. :func:`rollback` moves ``champion`` back to the version
it replaced.
"""

from __future__ import annotations

import getpass
import json
import math
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from mlflow.entities.model_registry import ModelVersion

from ctcid.config import Params
from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError, RegistryError
from ctcid.evaluation.evaluate import TestSet, counting_threshold, evaluate_scores, test_set
from ctcid.evaluation.report import ModelEvaluation, json_safe
from ctcid.paths import StageInputs
from ctcid.registry.behaviour import check_all, probes_from_crops
from ctcid.registry.store import CHALLENGER, CHAMPION, PREVIOUS_TAG, ROLLED_BACK_TAG, Registry
from ctcid.split import read_split

Action = Literal["promoted", "refused", "kept", "forced", "rolled_back"]
PROMOTION_FILE = "promotion.json"
_SCORE_CHUNK = 2048  # crops per pyfunc call: bounds memory
_SHORT = {"worst_mean_change": "change", "worst_same_call": "same call", "mean_shift": "shift"}
_HISTORY_LIMIT = 4000  # characters; MLflow keeps at most 5000 per tag value


@dataclass(frozen=True)
class Criterion:
    """One line of the gate's table; ``passed`` None means shown for information, not decided."""

    name: str
    challenger: float | str | None
    champion: float | str | None
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "-"}[self.passed]


@dataclass(frozen=True)
class Decision:
    action: Action
    model_name: str
    challenger: str | None  # version numbers
    champion_before: str | None
    champion_after: str | None
    criteria: list[Criterion] = field(default_factory=list)
    reason: str = ""
    by: str = ""
    at: str = ""

    @property
    def moved(self) -> bool:
        return self.champion_before != self.champion_after

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.criteria if c.passed is False]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["promoted"] = int(self.action in ("promoted", "forced"))
        values["failed"] = self.failed
        values["criteria"] = [{**asdict(c), "verdict": c.verdict} for c in self.criteria]
        return json_safe(values)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


@dataclass(frozen=True)
class GateData:
    """The current test set, read once and shared by both models' assessments."""

    crops: np.ndarray
    tests: TestSet
    count_threshold: float
    probes: dict[str, np.ndarray] | None  # None when the behavioural checks are off

    @classmethod
    def load(cls, params: Params, inputs: StageInputs, raw_dir: Path | None) -> GateData:
        manifest = read_manifest(inputs.manifest)
        split = read_split(inputs.split)
        tests = test_set(manifest, split, raw_dir)
        crops = open_crops(inputs.crops)
        probes = None
        if params.registry.behaviour_checks:
            probes = probes_from_crops(
                crops,
                manifest.iloc[tests.detections],
                params.channels,
                params.segment.cd45_threshold,
                params.registry.behaviour_probes,
                params.seed,
            )
        return cls(crops, tests, counting_threshold(split), probes)


@dataclass(frozen=True)
class Assessment:
    """One model's results on the current test set."""

    version: str
    evaluation: ModelEvaluation
    behaviours: dict[str, bool | None]
    behaviour_numbers: dict[str, dict[str, float]]


def promote(
    params: Params,
    inputs: StageInputs,
    raw_dir: Path | None,
    force: bool = False,
    reason: str = "",
) -> Decision:
    """Move ``champion`` to the challenger when the gate (or ``force``) says so; never half-way."""
    if force and not reason.strip():
        raise CtcidError("--force needs --reason: the registry records who overrode the gate and why")
    registry = Registry(params.mlflow)
    challenger = registry.require_alias(CHALLENGER, "register one first ('ctcid register', dvc repro)")
    champion = registry.alias(CHAMPION)
    before = None if champion is None else str(champion.version)
    if before == str(challenger.version):
        return _record(
            registry, Decision("kept", registry.name, before, before, before, reason="already champion")
        )

    data = GateData.load(params, inputs, raw_dir)
    ours = assess(registry, challenger, params, data)
    theirs, unusable = None, ""
    if champion is not None:
        try:
            theirs = assess(registry, champion, params, data)
        except CtcidError as error:  # a champion that no longer loads or fits today's crops
            if not force:
                raise CtcidError(f"the champion cannot be compared: {error}; --force --reason ... "
                                 "promotes the challenger without the comparison") from None
            unusable = str(error)
    criteria = judge(params, ours, theirs, rolled_back=challenger.tags.get(ROLLED_BACK_TAG) == "true")
    if unusable:
        criteria.insert(0, Criterion("champion scores the current test set", None, unusable[:200], False))
    passed = all(c.passed is not False for c in criteria)
    if passed or force:
        if before is not None:
            registry.tag(challenger.version, {PREVIOUS_TAG: before})
        registry.set_alias(CHAMPION, challenger.version)
        if challenger.tags.get(ROLLED_BACK_TAG) == "true":
            registry.tag(challenger.version, {ROLLED_BACK_TAG: "false"})
    action: Action = "promoted" if passed else ("forced" if force else "refused")
    after = str(challenger.version) if (passed or force) else before
    decision = Decision(
        action, registry.name, str(challenger.version), before, after, criteria, reason.strip()
    )
    return _record(registry, decision)


def rollback(params: Params, reason: str = "") -> Decision:
    """Move ``champion`` back to the version it replaced."""
    registry = Registry(params.mlflow)
    registry.require()
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise RegistryError(f"{registry.name!r} has no {CHAMPION}; nothing to roll back")
    previous = champion.tags.get(PREVIOUS_TAG)
    if not previous:
        raise RegistryError(
            f"version {champion.version} of {registry.name!r} became {CHAMPION} with no champion before it; "
            "nothing to roll back to (promote another version with 'ctcid promote --force --reason ...')"
        )
    registry.version(previous)  # still there? (an error names it before anything moves)
    registry.set_alias(CHAMPION, previous)
    registry.tag(champion.version, {ROLLED_BACK_TAG: "true"})
    decision = Decision(
        "rolled_back",
        registry.name,
        str(champion.version),
        str(champion.version),
        previous,
        reason=reason.strip() or "rollback",
    )
    return _record(registry, decision)


def assess(registry: Registry, version: ModelVersion, params: Params, data: GateData) -> Assessment:
    """Score a registered version, as the registry serves it, on the current test set."""
    model = registry.load(version)
    threshold = float(model.unwrap_python_model().threshold)

    def score(batch: np.ndarray) -> np.ndarray:
        try:
            parts = [
                model.predict(np.asarray(batch[i : i + _SCORE_CHUNK], dtype=np.float32))["ctc_probability"]
                for i in range(0, len(batch), _SCORE_CHUNK)
            ]
        except Exception as error:  # a signature that does not fit today's crops (another crop size)
            raise CtcidError(
                f"version {version.version} cannot score crops of shape {tuple(batch.shape[1:])} "
                f"({str(error).splitlines()[0][:300]})"
            ) from None
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]) if parts else np.empty(0)

    # detections are in manifest order: a sequential read
    scores = score(data.crops[data.tests.detections])
    evaluation = evaluate_scores(
        f"v{version.version}", scores, data.tests, threshold, data.count_threshold, params
    )
    behaviours: dict[str, bool | None] = {}
    numbers: dict[str, dict[str, float]] = {}
    if data.probes is not None:
        limits = {
            "min_mean_shift": params.registry.behaviour_min_shift,
            "min_share": params.registry.behaviour_min_share,
        }
        for outcome in check_all(score, data.probes, **limits):
            behaviours[outcome.name], numbers[outcome.name] = outcome.passed, outcome.measured
    return Assessment(str(version.version), evaluation, behaviours, numbers)


def judge(
    params: Params, ours: Assessment, theirs: Assessment | None, rolled_back: bool = False
) -> list[Criterion]:
    """The gate's criteria, in the order the table shows them."""
    policy = params.registry
    mine, other = ours.evaluation, theirs.evaluation if theirs else None

    def metric(evaluation: ModelEvaluation | None, name: str) -> float | None:
        return None if evaluation is None else float(getattr(evaluation.operating, name))

    def mae(evaluation: ModelEvaluation | None) -> float | None:
        return None if evaluation is None or evaluation.patients is None else float(evaluation.patients.mae)

    primary = policy.primary_metric
    criteria = []
    if other is not None:
        delta = metric(mine, primary) - metric(other, primary)  # type: ignore[operator]
        criteria.append(
            Criterion(
                f"{primary} - champion's >= {policy.min_improvement:g}",
                metric(mine, primary),
                metric(other, primary),
                _at_least(delta, policy.min_improvement),
            )
        )
    else:
        criteria.append(Criterion(f"{primary} (no champion to beat)", metric(mine, primary), None, None))
    criteria += [
        Criterion(
            f"sensitivity >= {policy.min_sensitivity:g}",
            metric(mine, "sensitivity"),
            metric(other, "sensitivity"),
            _at_least(metric(mine, "sensitivity"), policy.min_sensitivity),
        ),
        Criterion(
            f"specificity >= {policy.min_specificity:g}",
            metric(mine, "specificity"),
            metric(other, "specificity"),
            _at_least(metric(mine, "specificity"), policy.min_specificity),
        ),
        Criterion(
            f"patient count MAE <= {policy.max_patient_mae:g}",
            mae(mine),
            mae(other),
            _at_least(-(mae(mine) or math.inf), -policy.max_patient_mae),
        ),
    ]
    if primary != "auc":
        criteria.insert(1, Criterion("auc", metric(mine, "auc"), metric(other, "auc"), None))
    for name, passed in ours.behaviours.items():
        numbers = ", ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in ours.behaviour_numbers[name].items())
        theirs_text = None
        if theirs is not None and name in theirs.behaviours:
            theirs_text = {True: "pass", False: "fail", None: "undecided"}[theirs.behaviours[name]]
        criteria.append(Criterion(f"behaviour: {name}", numbers, theirs_text, passed))
    if rolled_back:
        criteria.append(Criterion("not rolled back before", "rolled back", None, False))
    return criteria


def _at_least(value: float | None, bound: float) -> bool:
    return value is not None and not math.isnan(value) and value >= bound - 1e-12


def _record(registry: Registry, decision: Decision) -> Decision:
    """Stamp who and when, write the decision onto the versions it concerns."""
    stamped = replace(
        decision,
        by=f"{getpass.getuser()}@{socket.gethostname()}",
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if stamped.challenger is not None and stamped.action != "kept":
        tags = {
            "promotion.decision": stamped.action,
            "promotion.at": stamped.at,
            "promotion.by": stamped.by,
            "promotion.champion_before": stamped.champion_before or "none",
        }
        if stamped.reason:
            tags["promotion.reason"] = stamped.reason[:4000]
        if stamped.failed:
            tags["promotion.failed"] = "; ".join(stamped.failed)[:4000]
        tags["promotion.history"] = _history(registry, stamped)
        registry.tag(stamped.challenger, tags)
    return stamped


def _history(registry: Registry, decision: Decision) -> str:
    """Every decision about a version, one line each, newest last (the tag keeps the latest ones)."""
    assert decision.challenger is not None
    earlier = registry.version(decision.challenger).tags.get("promotion.history", "")
    line = f"{decision.at} {decision.action} by {decision.by}"
    if decision.reason:
        line += f": {decision.reason}"
    lines = [*earlier.splitlines(), line[:500]]
    while len("\n".join(lines)) > _HISTORY_LIMIT:
        lines.pop(0)
    return "\n".join(lines)

