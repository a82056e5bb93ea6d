"""The tiny project every end-to-end test shares, built once per session (minutes). Tests that
change it work on a copy (e2e_support.copy_project)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import build_project


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("ctcid-e2e"))
