"""The tiny project every end-to-end test shares, built once per `make test` (tests/e2e_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_support import shared_build


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_build(tmp_path_factory)


@pytest.fixture(scope="session")
def project(built: Path) -> Path:
    """The built project, as `make run` leaves it; tests may run commands in it."""
    return built / "project"


@pytest.fixture(scope="session")
def pristine_project(built: Path) -> Path:
    """A copy of the project as the build left it, for the one test module that changes it."""
    return built / "pristine"
