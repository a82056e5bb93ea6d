"""One champion, packaged once per session, and the service started on a free loopback port.

The model is the registry tests' AlexNet on the shared synthetic crops (24 px), registered in a
SQLite registry and promoted through the (lenient) gate; fields come from the simulator, cut with
the same 24-px crops. Every step runs for real: ``ctcid package`` and ``ctcid serve`` as processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import torch
from service_support import Packaged, Server, running_service, write_drift_reference, write_params

from ctcid.config.params import Params
from ctcid.evaluation.evaluate import evaluate_models
from ctcid.model.train import train_backbone
from ctcid.paths import DRIFT_REFERENCE_FILE, StageInputs
from ctcid.raw.simulate import simulate_dataset
from ctcid.registry.promote import promote
from ctcid.registry.register import register_selected
from factory import CROP_SIZE, free_port, tiny_params

BACKBONE = "alexnet"


def service_params(root: Path) -> Params:
    base = tiny_params(root, [BACKBONE], epochs=2, patience=2)
    return base.model_copy(
        update={
            "segment": base.segment.model_copy(update={"crop_size": CROP_SIZE, "workers": 1}),
            "simulate": base.simulate.model_copy(
                update={"n_samples": 4, "fields_per_sample": (2, 2), "field_size": 192, "workers": 1}
            ),
            "registry": base.registry.model_copy(
                update={
                    "min_sensitivity": 0.0,
                    "min_specificity": 0.0,
                    "max_patient_mae": 1e6,
                    "behaviour_checks": False,
                }
            ),
            "serving": base.serving.model_copy(
                update={
                    "max_field_px": 1024,
                    "max_upload_mb": 4.0,
                    "max_crops": 300,
                    "max_fields": 4,
                    "max_batch_size": 64,
                    "max_latency_ms": 1000,
                }
            ),
        }
    )


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory, synthetic_stage_inputs: dict[str, Path]) -> Packaged:
    root = tmp_path_factory.mktemp("service")
    params = service_params(root)
    s = synthetic_stage_inputs
    inputs = StageInputs(s["crops"], s["manifest"], s["split"])
    torch.set_num_threads(1)
    train_backbone(params, BACKBONE, inputs, root / "models", root / "reports", show_progress=False)
    evaluate_models(params, inputs, root / "models", root / "reports", s["raw"])
    # the synthetic crops have no fields behind them; the champion's drift reference is fitted on
    # simulated fields instead, cut as the service cuts them, and written where evaluate writes it
    simulate_dataset(params, root / "fields", show_progress=False, workers=1)
    write_drift_reference(root / "fields", params, root / "reports" / DRIFT_REFERENCE_FILE)
    register_selected(params, inputs, root / "models", root / "reports")
    decision = promote(params, inputs, s["raw"])
    assert decision.action == "promoted", decision
    done = Packaged(
        write_params(params, root / "params.yaml"),
        params,
        root / "bentoml",
        root / "fields",
        root / "models",
        root / "reports",
        s["crops"],
    )
    result = done.ctcid("package", "--reports", str(root / "reports"))
    assert result.returncode == 0, result.stderr
    return done


@pytest.fixture(scope="session")
def service(packaged: Packaged) -> Iterator[Server]:
    with running_service(packaged, free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def served_openapi(service: Server) -> schemathesis.BaseSchema:
    """The served Bento's OpenAPI document (``/docs.json``) as schemathesis' schema, loopback only."""
    schema = schemathesis.openapi.from_url(f"{service.url}/docs.json", timeout=30)
    schema.config.update(base_url=service.url)
    return schema
