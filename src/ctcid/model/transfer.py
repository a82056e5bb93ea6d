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
from dataclasses import replace
from pathlib import Path

import mlflow.artifacts
from mlflow.exceptions import MlflowException

from ctcid.config.mlflow import MlflowParams
from ctcid.errors import CtcidError
from ctcid.paths import MODEL_FILE
from ctcid.registry_client import CHAMPION, Champion, RegistryClient, use_registry

TRAIN_SAMPLES_ARTIFACT = "data/train_samples.json"


class NoChampion(CtcidError):
    """No registered champion can be fine-tuned for this backbone and test set; the message says why."""


def write_train_samples(path: Path, samples: Iterable[str]) -> Path:
    """The training patients of a run, for the leakage check of a later fine-tuning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(set(samples)), indent=0) + "\n")
    return path


def find_champion(
    params: MlflowParams, backbone: str, test_samples: Iterable[str], dest: Path | None = None
) -> Champion:
    """The champion, downloaded (``path`` set), if ``backbone`` may be fine-tuned from it; else NoChampion."""
    registry = RegistryClient(params)
    # the artifact downloads below resolve models:/ and runs:/ through MLflow's global URIs
    use_registry(params)
    champion = registry.champion()
    if champion is None:
        raise NoChampion(f"{registry.name!r} has no {CHAMPION} at {registry.uri}; 'dvc repro' registers one")
    where = f"{champion.model_name} v{champion.version}"
    if champion.backbone != backbone:
        raise NoChampion(f"the champion {where} is a {champion.backbone or 'unknown'} model, not {backbone}")
    trained_on = _train_samples(champion.run_id)
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
            "them into the test metrics. The check compares sample names: if these are other "
            "patients that only share the champion's training names (two cohorts both numbered "
            "S0000..), rename their sample folders to unique patient IDs (a lab's own IDs, "
            "'ctcid ingest --sample', 'ctcid simulate --first-sample') and run again; if they are "
            "the same patients, train with train.init scratch or pretrained"
        )
    folder = Path(dest or tempfile.mkdtemp(prefix="ctcid-champion-"))
    local = registry.download(champion.version, folder)
    found = sorted(local.rglob(MODEL_FILE))
    if not found:
        raise NoChampion(f"the champion {where} holds no {MODEL_FILE} (not a ctcid model)")
    return replace(champion, path=found[0])


def _train_samples(run_id: str) -> set[str] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=TRAIN_SAMPLES_ARTIFACT, dst_path=tmp
            )
            return set(json.loads(Path(path).read_text()))
        except (MlflowException, OSError, ValueError):
            return None
