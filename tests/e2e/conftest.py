"""The tiny project every end-to-end test shares, built once per `make test` (minutes).

Under pytest-xdist the workers share it: the first to ask builds it under a file lock, the others
wait for it and use it. The build also leaves a pristine copy for the retrain rehearsal, which
changes its project, so that it never copies one that a test on another worker is using.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e_support import build_project, copy_project
from filelock import FileLock


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # every xdist worker's basetemp lies in the run's own folder; without xdist there is one process
    root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "ctcid-e2e"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


@pytest.fixture(scope="session")
def project(built: Path) -> Path:
    """The built project, as `make run` leaves it; tests may run commands in it."""
    return built / "project"


@pytest.fixture(scope="session")
def pristine_project(built: Path) -> Path:
    """A copy of the project as the build left it, for the one test module that changes it."""
    return built / "pristine"
