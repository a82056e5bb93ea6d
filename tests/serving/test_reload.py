"""A promotion, then 'ctcid package' and a restart: the service serves the new champion.

Runs on a copy of the session's registry and BentoML store, so the session's service is untouched.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import torch
from service_support import Packaged, running_service, write_params

from ctcid.paths import MODEL_FILE, StageInputs
from ctcid.registry.promote import promote
from ctcid.registry.register import register_selected
from factory import free_port

pytestmark = pytest.mark.service


def _copy(packaged: Packaged, root: Path) -> Packaged:
    db = Path(packaged.params.mlflow.tracking_uri.removeprefix("sqlite:///"))
    shutil.copy(db, root / "mlflow.db")
    shutil.copytree(packaged.home, root / "bentoml")
    shutil.copytree(packaged.models, root / "models")
    shutil.copytree(packaged.reports, root / "reports")
    mlflow = packaged.params.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"})
    params = packaged.params.model_copy(update={"mlflow": mlflow})
    return replace(
        packaged,
        params=params,
        params_file=write_params(params, root / "params.yaml"),
        home=root / "bentoml",
        models=root / "models",
        reports=root / "reports",
    )


def test_package_and_restart_serve_the_new_champion(
    packaged: Packaged, synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    copy = _copy(packaged, tmp_path)
    again = copy.ctcid("package", "--reports", str(copy.reports))
    assert again.returncode == 0, again.stderr
    assert json.loads((copy.reports / "package.json").read_text())["reused_bento"] is True

    # a second model: the same network with another operating threshold is another file
    model_file = copy.models / "alexnet" / MODEL_FILE
    saved = torch.load(model_file, weights_only=True)
    saved["metadata"]["threshold"] = 0.25
    torch.save(saved, model_file)
    s = synthetic_stage_inputs
    inputs = StageInputs(s["crops"], s["manifest"], s["split"])
    version = register_selected(copy.params, inputs, copy.models, copy.reports).version
    decision = promote(copy.params, inputs, s["raw"], force=True, reason="reload test")
    assert decision.champion_after == version != "1"

    done = copy.ctcid("package", "--reports", str(copy.reports))
    assert done.returncode == 0, done.stderr
    record = json.loads((copy.reports / "package.json").read_text())
    assert (record["version"], record["reused_model"], record["reused_bento"]) == (version, False, False)

    with running_service(copy, free_port()) as server:
        info = requests.get(f"{server.url}/model", timeout=30).json()
        assert (info["version"], info["operating_threshold"]) == (version, 0.25)
        field = copy.field(0, 0)
        answer = requests.post(
            f"{server.url}/count_field", files={"field": (field.name, field.read_bytes())}, timeout=120
        )
        assert answer.json()["model"] == f"ctcid-classifier v{version}"
        process = server.process
    # the server stopped on SIGTERM, cleanly and promptly, and nothing listens any more
    assert process.returncode == 0, server.log.read_text()[-2000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/livez", timeout=5)
