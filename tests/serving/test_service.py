"""The service over HTTP, started for real: every endpoint's answer, equal to ctcid's in-process one."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.service


def test_model_names_the_champion(service, packaged) -> None:
    answer = requests.get(f"{service.url}/model", timeout=30)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["alias"] == "champion"
    assert info["version"] == "1"
    assert info["segment"]["crop_size"] == packaged.params.segment.crop_size
