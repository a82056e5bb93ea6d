"""Helpers of the end-to-end tests: the tiny project (params-tiny.yaml, `dvc repro` in a fresh git
repository), commands run in it, and its registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ctcid.contracts import BACKBONES as CONTRACT_BACKBONES

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("params-tiny.yaml")
BACKBONES = list(CONTRACT_BACKBONES)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the stages call `ctcid`; it lives next to the interpreter running the tests
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"  # rich tables in full, not cut to 80 columns
    env.pop("BENTOML_HOME", None)  # the project's own store, serving.bentoml_home, as 'make run' has it
    env.update(GIT_AUTHOR_NAME="ctcid", GIT_AUTHOR_EMAIL="ctcid@example.org")
    env.update(GIT_COMMITTER_NAME="ctcid", GIT_COMMITTER_EMAIL="ctcid@example.org")
    return env


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return result


def run_failing(cwd: Path, *args: str) -> str:
    """The output of a command that must fail."""
    result = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert result.returncode != 0, f"{' '.join(args)} succeeded:\n{result.stdout[-2000:]}"
    return result.stdout + result.stderr


def build_project(repo: Path) -> Path:
    """params-tiny.yaml's project in ``repo``: git + DVC, simulated data, `dvc repro`, pushed."""
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    # DVC reads declared params from params.yaml itself, so the project gets the complete file
    full = run(repo, "ctcid", "show-params", "--params", str(TINY)).stdout
    (repo / "params.yaml").write_text(full)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "gx").mkdir()
    shutil.copy(ROOT / "gx" / "great_expectations.yml", repo / "gx" / "great_expectations.yml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    # the package stage builds a wheel of the project and a Bento of serving/
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "serving").mkdir()
    for name in ("service.py", "bentofile.yaml"):
        shutil.copy(ROOT / "serving" / name, repo / "serving" / name)
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "remote", "add", "-d", "local", str(repo.parent / f"{repo.name}-remote"))
    # make run's own first step: data/raw simulated as params.yaml says, then 'dvc add'
    (repo / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "raw_data.sh", repo / "scripts" / "raw_data.sh")
    run(repo, "bash", "scripts/raw_data.sh")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny project")
    run(repo, "dvc", "repro")
    run(repo, "dvc", "push", "-q")
    return repo


def copy_project(project: Path, to: Path) -> Path:
    """A copy to change: its own git history, DVC cache, mlflow.db and optuna.db."""
    shutil.copytree(project, to, symlinks=True)
    return to


def registry(project: Path):
    from ctcid.config.mlflow import MlflowParams
    from ctcid.registry.store import Registry

    return Registry(MlflowParams(tracking_uri=f"sqlite:///{project / 'mlflow.db'}"))
