"""The promotion gate, and rollback: who may become ``champion``, decided on today's test set.

:func:`promote` scores the ``challenger`` and the current ``champion`` on the **same current** test
set (a champion's stored numbers may come from older data), then applies ``params.registry``:

* guard-rails on the challenger at its operating threshold: sensitivity, specificity, and the
  per-patient count error;
* the rule floor: on the same test patients, a per-patient count MAE no worse than the three-line
  rule's (``max_mae_over_rule``) and no more CTC-free patients called positive than the rule calls
  (``max_blank_positive_over_rule``): a model that counts worse than the rule is no champion;
* the worst-site guard-rail: its specificity on every external cohort (``external.cohorts``, as
  ``ctcid external-cohort`` prepared them under ``data/external``) at ``min_site_specificity``, so
  a model that wins at home and collapses at another site never becomes champion;
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from ctcid.config.external import ExternalParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.registry import RegistryParams
from ctcid.config.segment import SegmentParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.train import TrainParams
from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError, RegistryError
from ctcid.evaluation.evaluate import TestSet, counting_threshold, evaluate_scores, test_set
from ctcid.evaluation.report import ModelEvaluation, json_safe
from ctcid.evaluation.tables import fmt_p
from ctcid.intensity import Levels, manifest_levels, model_input, standardise
from ctcid.metrics import BinaryMetrics, binary_metrics
from ctcid.model.count_threshold import model_count_threshold
from ctcid.paths import EXTERNAL_DIR, StageInputs, cohort_inputs
from ctcid.registry.behaviour import SPOT_CHECK, check_all, probes_from_crops
from ctcid.registry.store import PREVIOUS_TAG, ROLLED_BACK_TAG, Registry
from ctcid.registry_client import CHALLENGER, CHAMPION
from ctcid.split import read_split

Action = Literal["promoted", "refused", "kept", "forced", "rolled_back"]
_SCORE_CHUNK = 2048  # crops per pyfunc call: bounds memory
_SHORT = {"worst_mean_change": "change", "worst_same_call": "same call", "mean_shift": "shift"}
_HISTORY_LIMIT = 4000  # characters; MLflow keeps at most 5000 per tag value


class PromoteConfig(StageConfig):
    """What the promote stage reads: the gate's policy and what it needs to score both models."""

    seed: int
    channels: list[str]
    segment: view(SegmentParams, "cd45_threshold")  # type: ignore[valid-type]  # behaviour probes' CD45 ring
    train: view(TrainParams, "bootstrap")  # type: ignore[valid-type]
    registry: RegistryParams
    external: view(ExternalParams, "cohorts")  # type: ignore[valid-type]  # the worst-site guard-rail
    mlflow: MlflowParams


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
class ModelInputs:
    """The test detections and behaviour probes on one input scale: counts, or standardised."""

    detections: np.ndarray  # float32, the test samples' detections in manifest order
    probes: dict[str, np.ndarray] | None  # None when the behavioural checks are off


@dataclass(frozen=True)
class SiteCells:
    """The labelled cells of one external cohort, read lazily in chunks when a version is scored."""

    name: str
    crops: np.ndarray  # memory-mapped crops.npy of the cohort
    rows: np.ndarray  # its labelled rows
    levels: Levels  # every row's field levels
    y_true: np.ndarray

    @classmethod
    def load(cls, name: str, inputs: StageInputs, channels: list[str]) -> SiteCells:
        manifest = read_manifest(inputs.manifest)
        labels = manifest["true_label"]
        rows = np.flatnonzero(labels.notna().to_numpy())
        return cls(
            name,
            open_crops(inputs.crops),
            rows,
            manifest_levels(manifest, channels),
            labels.iloc[rows].to_numpy(dtype=np.int64),
        )

    def batches(self, standardised: bool) -> Iterator[np.ndarray]:
        for start in range(0, len(self.rows), _SCORE_CHUNK):
            rows = self.rows[start : start + _SCORE_CHUNK]
            yield model_input(self.crops[rows], self.levels.rows(rows), standardised)


@dataclass(frozen=True)
class GateData:
    """The current test set and the external cohorts, read once and shared by both assessments."""

    tests: TestSet
    count_threshold: float  # the split's prior-corrected one: for versions saved without their own
    inputs: dict[bool, ModelInputs]  # by "standardised": a version reads counts or standardised crops
    sites: dict[str, SiteCells | str]  # cohort -> its cells, or why they cannot be read

    @classmethod
    def load(
        cls,
        params: PromoteConfig,
        inputs: StageInputs,
        raw_dir: Path | None,
        external_dir: Path = EXTERNAL_DIR,
    ) -> GateData:
        manifest = read_manifest(inputs.manifest)
        split = read_split(inputs.split)
        tests = test_set(manifest, split, raw_dir)
        counts = np.asarray(open_crops(inputs.crops)[tests.detections], dtype=np.float32)
        levels = manifest_levels(manifest, params.channels).rows(tests.detections)
        cells = manifest.iloc[tests.detections].assign(crop_index=np.arange(len(tests.detections)))
        scales = {False: counts, True: standardise(counts, levels)}
        model_inputs = {
            standardised: ModelInputs(crops, _probes(params, crops, cells))
            for standardised, crops in scales.items()
        }
        sites = {name: _site(name, params, external_dir) for name in _guarded_cohorts(params)}
        return cls(tests, counting_threshold(split), model_inputs, sites)


def _probes(params: PromoteConfig, crops: np.ndarray, cells: pd.DataFrame) -> dict[str, np.ndarray] | None:
    """Behaviour probes cut from ``crops`` (counts or standardised: the perturbations follow their scale)."""
    if not params.registry.behaviour_checks:
        return None
    return probes_from_crops(
        crops,
        cells,
        params.channels,
        params.segment.cd45_threshold,
        params.registry.behaviour_probes,
        params.seed,
    )


def _guarded_cohorts(params: PromoteConfig) -> list[str]:
    if params.registry.min_site_specificity is None:
        return []
    return [name for name, cohort in params.external.cohorts.items() if cohort.guarded]


def _site(name: str, params: PromoteConfig, external_dir: Path) -> SiteCells | str:
    try:
        return SiteCells.load(name, cohort_inputs(external_dir, name), params.channels)
    except CtcidError as error:
        return f"not prepared ({str(error)[:160]}); run 'ctcid external-cohort --cohort {name}' (dvc repro)"


@dataclass(frozen=True)
class Assessment:
    """One model's results on the current test set and on each external cohort."""

    version: str
    evaluation: ModelEvaluation
    behaviours: dict[str, bool | None]
    behaviour_numbers: dict[str, dict[str, float]]
    sites: dict[str, BinaryMetrics | str] = field(default_factory=dict)  # or why it was not scored


def promote(
    params: PromoteConfig,
    inputs: StageInputs,
    raw_dir: Path | None,
    force: bool = False,
    reason: str = "",
    external_dir: Path = EXTERNAL_DIR,
) -> Decision:
    """Move ``champion`` to the challenger when the gate (or ``force``) says so; never half-way."""
    params = PromoteConfig.project(params)  # whatever the caller holds, the gate reads only its keys
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

    data = GateData.load(params, inputs, raw_dir, external_dir)
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


def rollback(params: PromoteConfig, reason: str = "") -> Decision:
    """Move ``champion`` back to the version it replaced."""
    params = PromoteConfig.project(params)
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


def assess(registry: Registry, version: ModelVersion, params: PromoteConfig, data: GateData) -> Assessment:
    """Score a registered version, as the registry serves it, on the current test set and cohorts."""
    model = registry.load(version)
    served = model.unwrap_python_model()
    threshold = float(served.threshold)
    # its own counting threshold; versions saved before ctcid chose one count at the split's
    counting = model_count_threshold(served, data.count_threshold)
    # versions registered before ctcid standardised crops read counts
    standardised = bool(getattr(served, "standardise", False))
    inputs = data.inputs[standardised]

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

    scores = score(inputs.detections)
    evaluation = evaluate_scores(
        f"v{version.version}", scores, data.tests, threshold, counting,
        params.train.bootstrap, params.seed,
    )
    behaviours: dict[str, bool | None] = {}
    numbers: dict[str, dict[str, float]] = {}
    if inputs.probes is not None:
        policy = params.registry
        outcomes = check_all(
            score,
            inputs.probes,
            min_mean_shift=policy.behaviour_min_shift,
            min_share=policy.behaviour_min_share,
            spot_min_shift=policy.spot_min_shift,  # the spot check's own, higher bar
            spot_min_share=policy.spot_min_share,
        )
        for outcome in outcomes:
            behaviours[outcome.name], numbers[outcome.name] = outcome.passed, outcome.measured
    sites: dict[str, BinaryMetrics | str] = {}
    for name, cells in data.sites.items():
        if isinstance(cells, str):
            sites[name] = cells
            continue
        site_scores = np.concatenate([score(batch) for batch in cells.batches(standardised)] or [np.empty(0)])
        sites[name] = binary_metrics(cells.y_true, site_scores, threshold)
    return Assessment(str(version.version), evaluation, behaviours, numbers, sites)


def judge(
    params: PromoteConfig, ours: Assessment, theirs: Assessment | None, rolled_back: bool = False
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
            # a perfect count (MAE 0.0) passes: only a missing one counts as infinitely wrong
            _at_least(-(math.inf if mae(mine) is None else mae(mine)), -policy.max_patient_mae),
        ),
    ]
    criteria += _rule_floor(policy, mine, other)
    if primary != "auc":
        criteria.insert(1, Criterion("auc", metric(mine, "auc"), metric(other, "auc"), None))
    for name, passed in ours.behaviours.items():
        numbers = ", ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in ours.behaviour_numbers[name].items())
        theirs_text = None
        if theirs is not None and name in theirs.behaviours:
            theirs_text = {True: "pass", False: "fail", None: "undecided"}[theirs.behaviours[name]]
        label = f"behaviour: {name}"
        if name == SPOT_CHECK and not policy.spot_check_decides:
            # shown with its verdict in words, not deciding (registry.spot_check_decides)
            label += f" (reported: {'pass' if passed else 'fail' if passed is False else 'undecided'})"
            passed = None
        criteria.append(Criterion(label, numbers, theirs_text, passed))
    criteria += _patient_criteria(policy, mine, other)
    criteria += _site_criteria(policy.min_site_specificity, ours, theirs)
    if rolled_back:
        criteria.append(Criterion("not rolled back before", "rolled back", None, False))
    return criteria


def _rule_floor(
    policy: RegistryParams, mine: ModelEvaluation, other: ModelEvaluation | None
) -> list[Criterion]:
    """The three-line rule is the floor: the challenger must count no worse than it per patient.

    On the same test patients: the count MAE minus the rule's (the paired difference's point
    estimate, ``max_mae_over_rule``) and the share of CTC-free patients called positive at >= 1 CTC
    against the rule's (``max_blank_positive_over_rule``). Either margin null turns its line off.
    """
    criteria = []
    if policy.max_mae_over_rule is not None:
        margin = policy.max_mae_over_rule
        difference = None if mine.versus_rule is None else mine.versus_rule.mae.difference
        passed = _at_least(None if difference is None else -difference, -margin)
        text = _mae_over_rule(mine)
        if not passed:
            text += (
                f": counts worse per patient than the rule by more than {margin:g} CTC; not a champion. "
                "Retrain it (docs/registry.md#the-rule-floor) or override: ctcid promote --force --reason ..."
            )
        champion = None if other is None else _mae_over_rule(other)
        criteria.append(Criterion(f"rule floor: count MAE - rule's <= {margin:g}", text, champion, passed))
    if policy.max_blank_positive_over_rule is not None:
        margin = policy.max_blank_positive_over_rule
        shares = _blank_positive(mine)
        decided: bool | None
        if shares is None:
            text, decided = "not measured: no per-patient counts paired with the rule", False
        elif shares[2] == 0:  # no CTC-free test patient: nothing to call a false positive on
            text, decided = "undecided: no CTC-free test patient", None
        else:
            ours, rule, blanks = shares
            text = f"{ours:.2f} vs rule's {rule:.2f} of {blanks} CTC-free"
            decided = _at_least(rule + margin - ours, 0.0)
            if not decided:
                text += (
                    ": calls more CTC-free patients positive than the rule; not a champion. Retrain it "
                    "for specificity (docs/registry.md#the-rule-floor) or override: ctcid promote --force "
                    "--reason ..."
                )
        champion = None
        if other is not None and (theirs := _blank_positive(other)) is not None and theirs[2]:
            champion = f"{theirs[0]:.2f} vs rule's {theirs[1]:.2f}"
        label = f"rule floor: CTC-free called positive - rule's <= {margin:g}"
        criteria.append(Criterion(label, text, champion, decided))
    return criteria


def _mae_over_rule(evaluation: ModelEvaluation) -> str:
    """The per-patient count MAE against the rule's: both, their paired difference, its interval and p."""
    versus = evaluation.versus_rule
    if versus is None:
        return "not measured: no per-patient counts paired with the rule"
    mae = versus.mae
    ours = math.nan if evaluation.endpoints is None else evaluation.endpoints.values.get("mae", math.nan)
    return (
        f"{ours:.2f} vs rule's {versus.rule.get('mae', math.nan):.2f}: {mae.difference:+.2f} "
        f"[{mae.low:+.2f}, {mae.high:+.2f}], p {fmt_p(mae.p_value)}"
    )


def _blank_positive(evaluation: ModelEvaluation) -> tuple[float, float, int] | None:
    """The scorer's and the rule's share of CTC-free patients called positive, and how many there are."""
    if evaluation.versus_rule is None or evaluation.endpoints is None:
        return None
    blanks = int((evaluation.endpoints.table["true_count"] == 0).sum())
    return (
        float(evaluation.endpoints.values.get("blank_positive_share", math.nan)),
        float(evaluation.versus_rule.rule.get("blank_positive_share", math.nan)),
        blanks,
    )


def _patient_criteria(
    policy: RegistryParams, mine: ModelEvaluation, other: ModelEvaluation | None
) -> list[Criterion]:
    """Per-patient endpoints on the test patients: ``patient_criteria`` decide, ``patient_shown`` inform.

    The first line pairs the challenger's count error with the rule's on the same patients.
    """

    def endpoint(evaluation: ModelEvaluation | None, name: str) -> float | None:
        if evaluation is None or evaluation.endpoints is None:
            return None
        return evaluation.endpoints.values.get(name)

    criteria = []
    if mine.versus_rule is not None:
        mae = mine.versus_rule.mae
        text = f"{mae.difference:+.2f} [{mae.low:+.2f}, {mae.high:+.2f}], p {fmt_p(mae.p_value)}"
        theirs = None
        if other is not None and other.versus_rule is not None:
            theirs = f"{other.versus_rule.mae.difference:+.2f}"
        criteria.append(Criterion("patients: count MAE - rule's", text, theirs, None))
    for name, bound in policy.patient_criteria.items():
        value = endpoint(mine, name)
        parts, passed = [], True
        if bound.min is not None:
            parts.append(f">= {bound.min:g}")
            passed = passed and _at_least(value, bound.min)
        if bound.max is not None:
            parts.append(f"<= {bound.max:g}")
            passed = passed and _at_least(None if value is None else -value, -bound.max)
        label = f"patients: {name} {' and '.join(parts)}"
        criteria.append(Criterion(label, value, endpoint(other, name), passed))
    for name in policy.patient_shown:
        if name not in policy.patient_criteria:
            criteria.append(Criterion(f"patients: {name}", endpoint(mine, name), endpoint(other, name), None))
    return criteria


def _site_criteria(
    minimum: float | None, ours: Assessment, theirs: Assessment | None
) -> list[Criterion]:
    """One line per external cohort: the challenger's specificity there at its operating threshold."""
    if minimum is None:
        return []
    criteria = []
    for name, mine in ours.sites.items():
        other = None if theirs is None else theirs.sites.get(name)
        if isinstance(mine, str):
            criteria.append(Criterion(f"specificity at {name} >= {minimum:g}", mine, None, False))
            continue
        other_value = other.specificity if isinstance(other, BinaryMetrics) else other
        criteria.append(
            Criterion(
                f"specificity at {name} >= {minimum:g}",
                mine.specificity,
                other_value,
                _at_least(mine.specificity, minimum),
            )
        )
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

