"""Fine-tuning from the registry (``init: registry``): the champion's weights as a starting point.

A lab with a few hundred labelled cells of its own gains most by starting from the model trained
on a large cohort. The champion qualifies only when it is the same backbone and never trained on a
patient of the current test set: every train run records its training patients
(:data:`TRAIN_SAMPLES_ARTIFACT`), and an overlap with today's test patients would make the test
metrics of the fine-tuned model optimistic, so it is refused with the names of the patients.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.artifacts
from mlflow.exceptions import MlflowException

from ctcid.config import MlflowParams
from ctcid.errors import CtcidError
from ctcid.tracking import client_for

CHAMPION = "champion"
TRAIN_SAMPLES_ARTIFACT = "data/train_samples.json"
_MODEL_FILE = "model.pt"


class NoChampion(CtcidError):
    """No registered champion can be fine-tuned for this backbone and test set; the message says why."""


@dataclass(frozen=True)
class Champion:
    model_name: str
    version: str
    run_id: str
    backbone: str
    path: Path  # the champion's model.pt, downloaded

    def describe(self) -> str:
        return f"{self.model_name} v{self.version} ({self.backbone}, run {self.run_id})"


def write_train_samples(path: Path, samples: Iterable[str]) -> Path:
    """The training patients of a run, for the leakage check of a later fine-tuning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(set(samples)), indent=0) + "\n")
    return path


def find_champion(
    params: MlflowParams, backbone: str, test_samples: Iterable[str], dest: Path | None = None
) -> Champion:
    """The registry's champion, downloaded, if ``backbone`` may be fine-tuned from it; else NoChampion."""
    client = client_for(params)
    # the artifact downloads below resolve models:/ and runs:/ through MLflow's global URIs
    mlflow.set_tracking_uri(params.tracking_uri)
    mlflow.set_registry_uri(params.tracking_uri)
    name = params.model_name
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NoChampion(
            f"{name!r} has no {CHAMPION} at {params.tracking_uri}; 'dvc repro' registers one"
        ) from None
    where = f"{name} v{version.version}"
    source_backbone = version.tags.get("backbone", "")
    if source_backbone != backbone:
        raise NoChampion(f"the champion {where} is a {source_backbone or 'unknown'} model, not {backbone}")
    run_id = version.tags.get("training_run_id") or version.run_id
    trained_on = _train_samples(run_id)
    if trained_on is None:
        raise NoChampion(
            f"the champion {where} does not record its training patients (trained before ctcid "
            "recorded them), so a leak into the test set cannot be ruled out; retrain and register it"
        )
    leaked = sorted(trained_on & set(test_samples))
    if leaked:
        raise NoChampion(
            f"the champion {where} trained on {len(leaked)} of today's test patients "
            f"({', '.join(leaked[:5])}{'...' if len(leaked) > 5 else ''}); fine-tuning it would leak "
            "them into the test metrics"
        )
    folder = Path(dest or tempfile.mkdtemp(prefix="ctcid-champion-"))
    uri = f"models:/{name}/{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder)))
    found = sorted(local.rglob(_MODEL_FILE))
    if not found:
        raise NoChampion(f"the champion {where} holds no {_MODEL_FILE} (not a ctcid model)")
    return Champion(name, str(version.version), run_id, backbone, found[0])


def _train_samples(run_id: str) -> set[str] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=TRAIN_SAMPLES_ARTIFACT, dst_path=tmp
            )
            return set(json.loads(Path(path).read_text()))
        except (MlflowException, OSError, ValueError):
            return None
