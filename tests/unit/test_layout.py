"""The package layout holds: steps import only the core and earlier steps, and each dvc stage
depends on every module its command imports (so a change there re-runs the stage) and on no other
(so a change elsewhere re-runs nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "ctcid"

# Pipeline order: a module may import its own layer and any layer before it, never one after.
LAYERS = [
    "core", "raw", "segmentation", "quality", "split", "model", "tuning", "evaluation", "registry", "serving",
    "external", "audit", "retrain",
]
ENTRY_LAYER = "cli"  # the CLI calls every step
# The params loader: every command reads params.yaml through it, so every stage depends on it; a
# stage's own modules import only the config modules of their sections (ctcid.config.stage), so
# the closure stops here: editing the serving section re-runs no training.
LOADER = {"ctcid.config.loader", "ctcid.config.params"}
STAGE_ENTRIES = {
    "segment": "ctcid.segmentation.stage",
    "validate": "ctcid.quality.gate",
    "split": "ctcid.split",
    "tune": "ctcid.tuning.tune",
    "train": "ctcid.model.train",
    "evaluate": "ctcid.evaluation.evaluate",
    "register": "ctcid.registry.register",
    "promote": "ctcid.registry.promote",
    "package": "ctcid.serving.package",
    "external_cohort": "ctcid.external.cohort",
    "external": "ctcid.external.stage",
    "audit": "ctcid.audit.stage",
}


def module_file(name: str) -> Path:
    path = REPO / "src" / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def layer_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "config":
        return "core"
    if parts[1] == "cli":
        return ENTRY_LAYER
    if len(parts) > 2 or (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "split" if parts[1] == "split" else "core"


def ctcid_imports(name: str) -> set[str]:
    """Every ``ctcid`` module that ``name`` imports, at top level or inside functions."""
    tree = ast.parse(module_file(name).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ctcid"):
            base = node.module
            for alias in node.names:  # 'from ctcid import paths' names a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if module_file(candidate).exists() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ctcid")}
    return {m for m in found if m != "ctcid"}


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            if current not in LOADER:
                todo.extend(ctcid_imports(current))
    return seen


def all_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(REPO / "src").with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    )


@pytest.mark.parametrize("module", all_modules())
def test_no_module_imports_a_later_step(module: str) -> None:
    layer = layer_of(module)
    if layer == ENTRY_LAYER:
        return
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = {m for m in ctcid_imports(module) if layer_of(m) not in allowed}
    assert not upward, f"{module} ({layer}) imports later steps: {sorted(upward)}"


def test_tracking_does_not_import_torch_side_code() -> None:
    assert not {m for m in closure("ctcid.tracking") if m.startswith("ctcid.model")}


def code_deps(stage: str) -> list[Path]:
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = definition.get("do", definition)["deps"]  # a foreach stage declares them under 'do'
    return [REPO / dep for dep in deps if dep.startswith("src/")]


def stage_modules(stage: str) -> set[Path]:
    """The files a stage's command runs: its entry's import closure and the params loader."""
    return {module_file(m) for m in closure(STAGE_ENTRIES[stage]) | LOADER}


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_each_stage_depends_on_every_module_it_imports(stage: str) -> None:
    covered = code_deps(stage)
    uncovered = [
        f for f in sorted(stage_modules(stage))
        if f.name != "__init__.py" and not any(f == c or c in f.parents for c in covered)
    ]
    missing = [str(f.relative_to(REPO)) for f in uncovered]
    assert not missing, f"dvc.yaml stage {stage} lacks deps on {missing}"


# package bakes a wheel of all of src/ctcid into the Bento: any code change is a new Bento
WHOLE_PACKAGE = {"package"}


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_no_stage_depends_on_code_it_does_not_run(stage: str) -> None:
    if stage in WHOLE_PACKAGE:
        return
    running = stage_modules(stage)
    idle = []
    for dep in code_deps(stage):
        files = [dep] if dep.is_file() else [f for f in dep.rglob("*.py") if f.name != "__init__.py"]
        idle += [str(f.relative_to(REPO)) for f in files if f not in running]
    assert not idle, f"dvc.yaml stage {stage} depends on {idle}, which its command never imports"


def test_no_stage_lists_the_mlflow_section_as_a_param() -> None:
    # where runs are tracked changes no result; which registered model gets the version does
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        names = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
        assert not [p for p in names if p.split(".")[0] == "mlflow" and p != "mlflow.model_name"], name


@pytest.mark.parametrize(
    ("section", "code", "untouched"),
    [
        ("serving", "src/ctcid/serving", ("segment", "validate", "split", "tune", "train", "evaluate")),
        ("external", "src/ctcid/external", ("segment", "validate", "split", "tune", "train", "evaluate")),
    ],
)
def test_editing_a_late_step_or_its_section_retrains_nothing(
    section: str, code: str, untouched: tuple[str, ...]
) -> None:
    # the serving section's module and the service's code, or the external cohorts', are no dep of
    # the stages that train: a docstring there must not cost hours of tuning at paper scale
    for stage in untouched:
        deps = [str(dep.relative_to(REPO)) for dep in code_deps(stage)]
        assert f"src/ctcid/config/{section}.py" not in deps, stage
        assert not [d for d in deps if d in (code, "src/ctcid") or d.startswith(f"{code}/")], stage
