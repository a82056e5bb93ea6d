"""Each dvc.yaml stage lists exactly the params its code can read (docs/reproducibility.md#params-and-deps).

What a stage can read is derived from its code: the entry point receives a
:class:`~ctcid.config.stage.StageConfig` and projects whatever it is given onto it first, so its
code holds no other key. The tests below tie that config to the stage's ``params`` in both
directions, and check that every key of the config is read somewhere in the stage's modules.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from pathlib import Path

import pytest
import yaml
from test_layout import REPO, closure, module_file

from ctcid.config.base import Section
from ctcid.config.params import Params
from ctcid.config.stage import StageConfig

# dvc.yaml stage -> its entry point, "module:function" (the CLI command calls exactly this)
STAGE_ENTRIES = {
    "segment": "ctcid.segmentation.stage:segment_stage",
    "validate": "ctcid.quality.gate:run_gate",
    "split": "ctcid.split:split_stage",
    "tune": "ctcid.tuning.tune:tune_backbone",
    "train": "ctcid.model.train:train_backbone",
    "evaluate": "ctcid.evaluation.evaluate:evaluate_models",
    "register": "ctcid.registry.register:register_selected",
    "promote": "ctcid.registry.promote:promote",
    "package": "ctcid.serving.package:package",
    "external_cohort": "ctcid.external.cohort:prepare_cohort",
    "external": "ctcid.external.stage:evaluate_external",
    "audit": "ctcid.audit.stage:audit",
}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def entry(stage: str) -> typing.Callable[..., object]:
    module, function = STAGE_ENTRIES[stage].split(":")
    return getattr(importlib.import_module(module), function)


def config_of(stage: str) -> type[StageConfig]:
    kind = typing.get_type_hints(entry(stage))["params"]
    assert isinstance(kind, type) and issubclass(kind, StageConfig), f"{stage}: params is not a StageConfig"
    return kind


def section_keys(section: str) -> set[str]:
    """Every key of a params.yaml section, dotted; a top-level scalar is its own key."""
    field = next(f for name, f in Params.model_fields.items() if (f.alias or name) == section)
    kind = field.annotation
    if isinstance(kind, type) and issubclass(kind, Section):
        return {f"{section}.{key}" for key in kind.model_fields}
    return {section}


def listed(stage: str) -> set[str]:
    """The stage's dvc.yaml params, whole sections expanded to their keys."""
    definition = stages()[stage]
    names: set[str] = set()
    for item in definition.get("do", definition).get("params", []):
        name = item if isinstance(item, str) else next(iter(item))
        # external_cohort's entry for its own cohort stands for the cohorts it reads
        name = name.replace(".${key}", "")
        names |= section_keys(name) if "." not in name else {name}
    return names


def test_every_stage_has_an_entry_point() -> None:
    assert set(STAGE_ENTRIES) == set(stages())


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_the_entry_point_projects_its_config_first(stage: str) -> None:
    # whatever a caller passes (the CLI's whole params, a test's), the step reads only its keys
    config = config_of(stage)
    body = ast.parse(inspect.getsource(entry(stage))).body[0].body  # type: ignore[attr-defined]
    statements = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    wanted = f"params = {config.__name__}.project(params)"
    projecting = [s for s in statements if isinstance(s, ast.Assign) and ast.unparse(s) == wanted]
    assert projecting, f"{stage}: {STAGE_ENTRIES[stage]} does not start from {wanted}"
    position = statements.index(projecting[0])
    reads_before = [ast.unparse(s) for s in statements[:position] if "params" in ast.unparse(s)]
    assert not reads_before, f"{stage}: reads params before projecting: {reads_before}"


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_every_key_a_stage_reads_is_a_dvc_param(stage: str) -> None:
    needed = {key for key, operational in config_of(stage).params_keys() if not operational}
    missing = needed - listed(stage)
    assert not missing, f"dvc.yaml stage {stage} reads {sorted(missing)} but does not list them as params"


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_no_stage_lists_a_key_it_cannot_read(stage: str) -> None:
    readable = {key for key, _ in config_of(stage).params_keys()}
    extra = listed(stage) - readable
    assert not extra, (
        f"dvc.yaml stage {stage} lists {sorted(extra)}, which {config_of(stage).__name__} does not hold: "
        "changing them re-runs the stage for nothing"
    )


def _reads(modules: set[str]) -> tuple[set[str], set[str], bool]:
    """In ``modules`` (outside the config package): attribute names and string constants; the
    sections dumped whole (``x.<section>.model_dump()``); whether a whole config is dumped
    (``result_values()``)."""
    names: set[str] = set()
    dumped: set[str] = set()
    everything = False
    for module in modules:
        if module.startswith("ctcid.config"):
            continue
        for node in ast.walk(ast.parse(module_file(module).read_text())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
                everything |= node.attr == "result_values"
                if node.attr == "model_dump" and isinstance(node.value, ast.Attribute):
                    dumped.add(node.value.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names, dumped, everything


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_every_key_of_a_stage_config_is_read(stage: str) -> None:
    # a config may hold only what the stage's code reads: each key by name, or its section dumped
    # whole (register writes segment.* into the model, and hashes the settings that shaped it)
    config = config_of(stage)
    names, dumped, everything = _reads(closure(STAGE_ENTRIES[stage].split(":")[0]))
    unread = [
        key for name, inner, key, _ in config._leaves()
        if (inner or name) not in names and name not in dumped and not everything
    ]
    assert not unread, f"{config.__name__} holds {unread}, which no module of stage {stage} reads"


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_a_stage_cannot_load_params_itself(stage: str) -> None:
    modules = closure(STAGE_ENTRIES[stage].split(":")[0])
    assert not {"ctcid.config.loader", "ctcid.config.params"} & modules, (
        f"stage {stage} imports the params loader: it could read keys its dvc.yaml entry does not list"
    )


def test_a_view_holds_only_its_keys() -> None:
    from ctcid.evaluation.evaluate import EvaluateConfig

    config = EvaluateConfig.project(Params())
    assert config.train.backbones and not hasattr(config.train, "epochs")
    keys = {key for key, _ in EvaluateConfig.params_keys()}
    assert keys >= {"train.backbones", "tune.objective", "drift.quantile"} and "train.epochs" not in keys


def test_operational_keys_change_no_stage() -> None:
    from ctcid.model.train import TrainConfig

    operational = {key for key, op in TrainConfig.params_keys() if op}
    assert operational == {"mlflow.tracking_uri", "mlflow.artifact_location", "mlflow.experiment"}
    assert Path(REPO / "dvc.yaml").read_text().count("mlflow.tracking_uri") == 0
