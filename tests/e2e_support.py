"""The tiny project of the end-to-end and browser tests (tests/e2e/params-tiny.yaml, `dvc repro` in a
fresh git repository), built once per `make test` for every worker; commands run in it; its registry.

Under pytest-xdist the workers share it: the first to ask builds it under a file lock, the others
wait for it and use it. The build also leaves a pristine copy for the retrain rehearsal, which
changes its project, so that it never copies one that a test on another worker is using.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from ctcid.contracts import BACKBONES as CONTRACT_BACKBONES

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "e2e" / "params-tiny.yaml"
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


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # every xdist worker's basetemp lies in the run's own folder; without xdist there is one process
    root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "ctcid-e2e"
    root.mkdir(exist_ok=True)
    return root


def shared_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``project`` (as `make run` leaves it) and ``pristine`` (a copy), built once."""
    root = _shared_root(tmp_path_factory)
    done = root / "built"
    with FileLock(root / "build.lock"):
        if not done.exists():
            for name in ("project", "project-remote", "pristine"):  # what a failed build left
                shutil.rmtree(root / name, ignore_errors=True)
            (root / "project").mkdir()
            build_project(root / "project")
            copy_project(root / "project", root / "pristine")
            done.touch()
    return root


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
