"""The sealed cohort is provably unread by the gate, tuning and selection; only 'ctcid audit' scores it.

Structurally: no config of tune, train, evaluate (which selects the backbone) or register has an
``external`` section to read a cohort from, and the promotion gate never guards on a sealed cohort.
Dynamically: on real prepared cohorts (simulated and segmented, a few one-field samples), the gate's
data, its criteria and ``ctcid external``'s report stay the same when the sealed cohort's labels are
flipped or the cohort is deleted, while flipping the open guard cohort's labels the same way changes
them (the control: these tests can fail). Then the audit itself: it scores the sealed cohort alone.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

import ctcid
from ctcid.audit.stage import AuditConfig, audit
from ctcid.clinical import ENDPOINT_NAMES
from ctcid.config.external import ExternalCohort
from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.config.split import SplitParams
from ctcid.config.stage import StageConfig
from ctcid.contracts import CTC_LABEL, NON_CTC_LABEL
from ctcid.errors import CtcidError
from ctcid.evaluation.drift import field_feature_table, fit_reference, write_reference
from ctcid.evaluation.evaluate import EvaluateConfig
from ctcid.external.cohort import COHORT_FILE, CohortConfig, load_cohort, prepare_cohort
from ctcid.external.settings import ExternalConfig
from ctcid.external.stage import evaluate_external
from ctcid.model.train import TrainConfig
from ctcid.paths import (
    AUDIT_FILE,
    AUDIT_SUMMARY_FILE,
    COHORT_SEGMENT,
    CROPS_NAME,
    EXTERNAL_FILE,
    EXTERNAL_SUMMARY_FILE,
    MANIFEST_NAME,
    StageInputs,
)
from ctcid.raw.simulate import simulate_dataset
from ctcid.registry.promote import GateData, PromoteConfig, _guarded_cohorts, assess, judge
from ctcid.registry.register import RegisterConfig
from ctcid.segmentation.stage import run_segment
from ctcid.split import make_split, write_split
from ctcid.tuning.settings import TuneConfig

OPEN, SEALED = "site", "vault"
SITE_RAIL = f"specificity at {OPEN} >= 0.5"


def tiny_params(tmp: Path, **cohorts: dict) -> Params:
    """A few one-field samples of 160 px (as tests/external prepares them), a site guard-rail, MLflow
    in tmp."""
    return parse_params(
        {
            "seed": 3,
            "simulate": {
                "n_samples": 6,
                "fields_per_sample": [1, 1],
                "field_size": 160,
                "ctc_burden_mean": 5.0,
                "ctc_burden_dispersion": 3.0,
                "background_cells_mean": 24.0,
                "workers": 1,
            },
            "segment": {"crop_size": 24, "workers": 1},
            "train": {"bootstrap": 40, "device": "cpu"},
            "registry": {
                "behaviour_checks": False,
                "min_site_specificity": 0.5,
                "patient_criteria": {"mae": {"max": 10.0}},
            },
            "external": {"bootstrap": 40, "gallery": 4, "cohorts": cohorts},
            "mlflow": {
                "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                "artifact_location": str(tmp / "mlruns"),
                "experiment": "ctcid-audit-test",
            },
        }
    )


COHORTS = {
    OPEN: {"seed": 21, "simulate": {"n_samples": 4}},
    SEALED: {
        "seed": 22,
        "sealed": True,
        "simulate": {"n_samples": 4},
        "repeatability": {"specimens": 2, "images": 2},
    },
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the GBM baseline's OpenMP threads spin while they wait: slow on a shared machine
    with threadpool_limits(1):
        yield


@dataclass(frozen=True)
class World:
    """The training data (raw fields, crops, manifest, split), its drift reference and two cohorts."""

    params: Params
    inputs: StageInputs
    raw: Path
    reference: Path
    external: Path  # prepared cohorts: never changed, tests change copies (with_cohorts)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("audit_world")
    params = tiny_params(root, **COHORTS)
    raw, segment = root / "train" / "raw", root / "train" / "segment"
    simulate_dataset(params, raw, show_progress=False)
    run_segment(raw, segment, root / "train" / "reports", params.segment, params.channels, False)
    manifest = pd.read_parquet(segment / MANIFEST_NAME)
    split = make_split(manifest, SplitParams(by="cell", test_size=0.3, n_folds=2), params.seed)
    write_split(split, root / "train" / "split.json")
    features = field_feature_table(raw, manifest, np.load(segment / CROPS_NAME), params.channels)
    write_reference(root / "drift_reference.json", fit_reference(features, quantile=0.99, folds=3))
    for name in COHORTS:
        prepare_cohort(params, name, root / "external" / name, show_progress=False)
        cohort = load_cohort(root / "external" / name)
        # the copies below point cohort.json at their own raw folder; quarantine lists hold paths too
        assert cohort.info.fields_quarantined == 0
        labels = cohort.manifest["true_label"]
        assert labels.notna().any() and 0 < labels.sum() < labels.notna().sum(), name  # both classes
    inputs = StageInputs(segment / CROPS_NAME, segment / MANIFEST_NAME, root / "train" / "split.json")
    return World(params, inputs, raw, root / "drift_reference.json", root / "external")


def with_cohorts(world: World, out: Path, flip: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> Path:
    """A copy of the prepared cohorts under ``out``: those in ``flip`` with every label flipped (the
    manifests' true_label and the annotations' label, re-images included), those in ``drop`` gone."""
    for name in COHORTS:
        if name in drop:
            continue
        folder = out / name
        shutil.copytree(world.external / name, folder)
        info = json.loads((folder / COHORT_FILE).read_text())
        info["raw_dir"] = str(folder / "raw")
        (folder / COHORT_FILE).write_text(json.dumps(info, indent=1) + "\n")
        if name in flip:
            flip_labels(folder)
    return out


def flip_labels(folder: Path) -> None:
    manifests = sorted(folder.rglob(MANIFEST_NAME))
    annotations = sorted(folder.rglob("annotations.csv"))
    assert manifests and annotations
    for path in manifests:
        table = pd.read_parquet(path)
        table["true_label"] = (1 - table["true_label"]).astype(table["true_label"].dtype)
        table.to_parquet(path, index=False)
    for path in annotations:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert set(table["label"]) <= {CTC_LABEL, NON_CTC_LABEL}
        table["label"] = table["label"].map({CTC_LABEL: NON_CTC_LABEL, NON_CTC_LABEL: CTC_LABEL})
        table.to_csv(path, index=False)


# --- (a) structurally ---------------------------------------------------------------------------------


def _subclasses(kind: type) -> set[type]:
    found = set()
    for sub in kind.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def _every_stage_config() -> set[type]:
    """Every StageConfig of the package: the modules that define a ``class ...(...Config)`` imported."""
    root = Path(ctcid.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if re.search(r"^class \w+\(\w*Config\):", path.read_text(), re.MULTILINE):
            parts = path.relative_to(root).with_suffix("").parts
            importlib.import_module(".".join(("ctcid", *parts)).removesuffix(".__init__"))
    return _subclasses(StageConfig)


@pytest.mark.parametrize("config", [TuneConfig, TrainConfig, EvaluateConfig, RegisterConfig])
def test_tuning_training_selection_and_registration_have_no_external_section(config: type) -> None:
    assert "external" not in config.model_fields
    assert not any(key.startswith("external") for key, _ in config.params_keys())
    projected = config.project(tiny_params(Path("unused"), **COHORTS))
    with pytest.raises(AttributeError):
        _ = projected.external


def test_only_the_external_stages_and_the_gate_read_the_external_section() -> None:
    # the decisions among them: the gate (PromoteConfig) reads only cohorts, and guards on open ones
    configs = _every_stage_config()
    assert {TuneConfig, TrainConfig, EvaluateConfig, RegisterConfig} < configs and len(configs) >= 12
    readers = {c for c in configs if "external" in c.model_fields}
    assert readers == {AuditConfig, CohortConfig, ExternalConfig, PromoteConfig}


def test_the_gate_never_guards_on_a_sealed_cohort() -> None:
    cohorts = {
        "plain": {"seed": 30},
        "unguarded": {"seed": 31, "guard": False},
        "guarded": {"seed": 32, "guard": True},
        "sealed": {"seed": 33, "sealed": True},
        "sealed_unguarded": {"seed": 34, "sealed": True, "guard": False},
        "lab_sealed": {"folder": "data/labs/x", "sealed": True},
    }
    params = tiny_params(Path("unused"), **cohorts)
    gate = PromoteConfig.project(params)
    assert _guarded_cohorts(gate) == ["plain", "guarded"]
    assert not set(_guarded_cohorts(gate)) & set(params.external.sealed_names())
    lenient = gate.registry.model_copy(update={"min_site_specificity": None})
    off = gate.model_copy(update={"registry": lenient})
    assert _guarded_cohorts(off) == []
    # whatever guard says, a sealed cohort is never guarded (guard: true is refused outright)
    for guard in (None, False):
        assert not ExternalCohort(seed=1, sealed=True, guard=guard).guarded


# --- (b) dynamically: the gate ------------------------------------------------------------------------


class _Served:
    threshold = 0.5
    standardise = False  # raw counts: the scorer reads the CD45 ring against the crop's background


class _CD45Model:
    """A registered model as promote.assess loads it: CTC when the crop has no CD45 ring."""

    def __init__(self, cd45: int) -> None:
        self.cd45 = cd45

    def unwrap_python_model(self) -> _Served:
        return _Served()

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        channel = batch[:, self.cd45].reshape(len(batch), -1).astype(np.float64)
        ring = channel.mean(axis=1) / np.maximum(np.percentile(channel, 10, axis=1), 1.0)
        return {"ctc_probability": 1.0 / (1.0 + np.exp(30.0 * (ring - 1.3)))}


class _Registry:
    def __init__(self, model: _CD45Model) -> None:
        self.model = model

    def load(self, version: object) -> _CD45Model:
        return self.model


def gate(world: World, external: Path) -> tuple[GateData, list]:
    """The promotion gate's data and criteria for a challenger (no champion), as promote() runs them."""
    params = PromoteConfig.project(world.params)
    data = GateData.load(params, world.inputs, world.raw, external)
    registry = _Registry(_CD45Model(params.channels.index("CD45")))
    challenger = assess(registry, SimpleNamespace(version="1", tags={}), params, data)  # type: ignore[arg-type]
    return data, judge(params, challenger, None)


def test_the_gate_reads_the_open_cohort_and_never_the_sealed_one(world: World, tmp_path: Path) -> None:
    data, criteria = gate(world, with_cohorts(world, tmp_path / "as_prepared"))
    assert set(data.sites) == {OPEN}
    by_name = {c.name: c for c in criteria}
    assert SITE_RAIL in by_name and not any(SEALED in c.name for c in criteria)
    site = by_name[SITE_RAIL].challenger
    assert isinstance(site, float) and 0.0 < site <= 1.0
    assert by_name["patients: count MAE - rule's"].challenger is not None  # per-patient lines are there
    assert by_name["patients: mae <= 10"].passed is True

    # the sealed cohort's labels flipped, or the cohort gone: the very same criteria
    for variant in ("sealed_flipped", "sealed_gone"):
        flipped = variant == "sealed_flipped"
        external = with_cohorts(
            world, tmp_path / variant, flip=(SEALED,) if flipped else (), drop=() if flipped else (SEALED,)
        )
        again_data, again = gate(world, external)
        assert repr(again) == repr(criteria), variant
        assert set(again_data.sites) == {OPEN}

    # the control: flipping the open guard cohort's labels moves its guard-rail
    _, moved = gate(world, with_cohorts(world, tmp_path / "open_flipped", flip=(OPEN,)))
    moved_site = {c.name: c for c in moved}[SITE_RAIL].challenger
    assert isinstance(moved_site, float) and abs(moved_site - site) > 0.2
    home = [c for c in criteria if not c.name.startswith("specificity at")]
    assert repr([c for c in moved if not c.name.startswith("specificity at")]) == repr(home)


# --- (b) dynamically: ctcid external ---------------------------------------------------------------


def run_external(world: World, external: Path, reports: Path) -> tuple[dict, str]:
    """external.json (its run stamp dropped) and external.md (its run line dropped) of one run."""
    evaluate_external(
        world.params, reports / "models", reports, external, world.inputs.split, world.reference,
        world.inputs.manifest, show_progress=False,
    )
    report = json.loads((reports / EXTERNAL_FILE).read_text())
    assert "run" in report
    report.pop("run")
    summary = (reports / EXTERNAL_SUMMARY_FILE).read_text().splitlines()
    return report, "\n".join(line for line in summary if not line.startswith("Run: "))


def _text(report: dict) -> str:
    return json.dumps(report, sort_keys=True)  # NaN prints as NaN: equal reports give equal text


def test_external_validation_leaves_the_sealed_cohort_out_and_unread(world: World, tmp_path: Path) -> None:
    report, summary = run_external(world, with_cohorts(world, tmp_path / "as_prepared"), tmp_path / "r0")
    assert set(report) == {"cohorts"} and set(report["cohorts"]) == {OPEN}
    assert SEALED not in summary and f"## {OPEN}" in summary
    assert not (tmp_path / "r0" / "external" / SEALED).exists()
    assert set(report["cohorts"][OPEN]["models"]) == {"gbm", "rule"}  # no backbone, no champion

    flipped, flipped_summary = run_external(
        world, with_cohorts(world, tmp_path / "sealed_flipped", flip=(SEALED,)), tmp_path / "r1"
    )
    assert _text(flipped) == _text(report) and flipped_summary == summary
    gone = with_cohorts(world, tmp_path / "sealed_gone", drop=(SEALED,))
    again, again_summary = run_external(world, gone, tmp_path / "r2")
    assert _text(again) == _text(report) and again_summary == summary
    for name in ("patients.csv", "predictions.csv", "drift_fields.csv"):
        first = (tmp_path / "r0" / "external" / OPEN / name).read_bytes()
        assert (tmp_path / "r1" / "external" / OPEN / name).read_bytes() == first, name

    # the control: the open cohort's labels flipped the same way change its report
    open_flipped = with_cohorts(world, tmp_path / "open_flipped", flip=(OPEN,))
    moved, _ = run_external(world, open_flipped, tmp_path / "r3")
    assert _text(moved) != _text(report)
    before, after = report["cohorts"][OPEN], moved["cohorts"][OPEN]
    assert after["ctc"] == after["labelled"] - before["ctc"]


def test_external_validation_refuses_when_every_cohort_is_sealed(world: World, tmp_path: Path) -> None:
    sealed_only = tiny_params(tmp_path, **{SEALED: COHORTS[SEALED]})
    with pytest.raises(CtcidError, match="every cohort of external.cohorts is sealed"):
        evaluate_external(
            sealed_only, tmp_path / "models", tmp_path, with_cohorts(world, tmp_path / "ext"),
            world.inputs.split, world.reference, world.inputs.manifest, show_progress=False,
        )


# --- (c) the audit ------------------------------------------------------------------------------------


def run_audit(world: World, external: Path, reports: Path, params: Params | None = None) -> dict:
    audit(
        params or world.params, reports / "models", reports, external, world.inputs.split, world.reference,
        world.inputs.manifest, show_progress=False,
    )
    return json.loads((reports / AUDIT_FILE).read_text())


def test_the_audit_scores_the_sealed_cohort_alone(world: World, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "models").mkdir(parents=True)  # no trained backbone; the MLflow in tmp has no champion
    report = run_audit(world, with_cohorts(world, tmp_path / "ext"), reports)

    assert set(report) == {"cohorts", "run"} and set(report["cohorts"]) == {SEALED}
    cohort = report["cohorts"][SEALED]
    assert cohort["ctc"] > 0 and cohort["samples"] == 4
    assert set(cohort["models"]) == {"gbm", "rule"}
    for name, model in cohort["models"].items():
        assert set(model["endpoints"]) == set(ENDPOINT_NAMES), name
        assert set(model["endpoints_ci95"]) == set(ENDPOINT_NAMES), name
        assert model["endpoints"]["n_patients"] == 4
        repeat = model["repeatability"]
        assert (repeat["n_specimens"], repeat["n_images"]) == (2, 4), name
        assert repeat["sd"] >= 0
    assert "versus_rule" in cohort["models"]["gbm"] and "versus_rule" not in cohort["models"]["rule"]
    assert cohort["models"]["rule"]["cells"]["auc"] is None  # 0/1 calls have no AUC (NaN, written null)

    summary = (reports / AUDIT_SUMMARY_FILE).read_text()
    assert summary.startswith("# Audit: the sealed cohorts")
    assert f"## {SEALED}" in summary and f"## {OPEN}" not in summary
    assert "Repeatability" in summary and "reports/audit/vault/" in summary
    figures = reports / "audit" / SEALED
    drawn = ("patients.csv", "predictions.csv", "drift.png", "review_burden.png", "predictive_values_ge5.png")
    for name in drawn:
        assert (figures / name).stat().st_size > 0, name
    assert not (reports / "audit" / OPEN).exists()
    assert not (reports / EXTERNAL_FILE).exists() and not (reports / EXTERNAL_SUMMARY_FILE).exists()

    # the audit does read the sealed labels (unlike everything above)
    flipped = run_audit(world, with_cohorts(world, tmp_path / "flipped", flip=(SEALED,)), tmp_path / "r1")
    assert flipped["cohorts"][SEALED]["ctc"] == cohort["labelled"] - cohort["ctc"]


def test_the_audit_without_a_sealed_cohort_says_how_to_add_one(world: World, tmp_path: Path) -> None:
    open_only = tiny_params(tmp_path, **{OPEN: COHORTS[OPEN]})
    with pytest.raises(CtcidError, match="sealed: true"):
        run_audit(world, with_cohorts(world, tmp_path / "ext"), tmp_path / "reports", open_only)
    assert not (tmp_path / "reports" / AUDIT_FILE).exists()


def test_the_sealed_cohort_is_prepared_like_any_other(world: World) -> None:
    vault = load_cohort(world.external / SEALED)
    assert vault.info.source == "simulated" and vault.info.seed == 22
    assert set(vault.manifest["sample"]) <= {f"{SEALED}-S{k:04d}" for k in range(4)}
    assert vault.repeats is not None and (world.external / SEALED / COHORT_SEGMENT / CROPS_NAME).is_file()
