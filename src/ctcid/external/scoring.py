"""Every scorer on one cohort: each trained backbone, the registered champion and the rule.

Scores cover every detection of the cohort (manifest order), so per-patient counts see what a lab's
run would see. The champion is scored as the registry serves it (its own operating and counting
thresholds); when its ``model.pt`` is one of today's trained backbones, that backbone's scores are
reused rather than computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.contracts import ANNOTATIONS_FILE, CTC_LABEL, read_annotations
from ctcid.external.settings import ExternalConfig
from ctcid.intensity import Levels, model_input
from ctcid.model.predict import load_model, score_crops
from ctcid.model.trainer import resolve_device
from ctcid.paths import MODEL_FILE
from ctcid.registry.pyfunc import file_sha256
from ctcid.registry_client import CHAMPION, RegistryClient
from ctcid.serving.served import ServedModel

RULE = "rule"
CHAMPION_NAME = CHAMPION  # the champion's scorer, named after its alias
_CHUNK = 2048  # crops per pyfunc call: bounds memory


@dataclass(frozen=True)
class Scorer:
    """One model's (or the rule's) scores over a cohort's detections, with its two thresholds."""

    name: str
    label: str
    scores: np.ndarray
    operating: float  # the sensitive call for review
    counting: float  # cells at or above it are counted per patient

    @property
    def probabilistic(self) -> bool:
        return self.name != RULE


def served_champion(params: ExternalConfig) -> ServedModel | None:
    """The champion as packaged (its stored settings, its model hash to find its backbone), or None
    when the registry has none yet."""
    from ctcid.serving.package import champion_served

    registry = RegistryClient(params.mlflow)
    if not registry.exists() or registry.champion() is None:
        return None
    return champion_served(params)


def backbone_scorers(
    params: ExternalConfig, models_dir: Path, crops: np.ndarray, levels: Levels, count_threshold: float
) -> dict[str, Scorer]:
    """Each trained backbone of ``train.backbones`` found under ``models_dir``."""
    device = resolve_device(params.train.device)
    scorers = {}
    for backbone in params.train.backbones:
        path = models_dir / backbone / MODEL_FILE
        if not path.is_file():
            continue
        loaded = load_model(path, device)
        scores = score_crops(loaded, crops, levels=levels).astype(np.float64)
        scorers[backbone] = Scorer(backbone, backbone, scores, loaded.info.threshold, count_threshold)
    return scorers


def champion_scorer(
    params: ExternalConfig,
    served: ServedModel,
    models_dir: Path,
    crops: np.ndarray,
    levels: Levels,
    scored: dict[str, Scorer],
) -> Scorer:
    """The champion's scores: a trained backbone's when the model file is the same, else the registry's."""
    label = f"champion ({served.label}, {served.backbone})"
    for backbone, scorer in scored.items():
        path = models_dir / backbone / MODEL_FILE
        if path.is_file() and file_sha256(path) == served.model_sha256:
            return Scorer(
                CHAMPION_NAME, label, scorer.scores, served.operating_threshold, served.counting_threshold
            )
    registry = RegistryClient(params.mlflow)
    version = registry.version(served.version)
    model = registry.load(version)
    parts = []
    for start in range(0, len(crops), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(crops)))
        batch = model_input(crops[rows], levels.rows(rows), served.standardise)
        parts.append(model.predict(batch)["ctc_probability"].to_numpy())
    scores = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    return Scorer(CHAMPION_NAME, label, scores, served.operating_threshold, served.counting_threshold)


def rule_scorer(manifest: pd.DataFrame) -> Scorer:
    calls = manifest["rule_label"].to_numpy(dtype=np.float64)
    return Scorer(RULE, "rule (CD45- and CEP8 >= 3)", calls, 0.5, 0.5)


def true_counts(raw_dir: Path, samples: list[str], usable: set[tuple[str, str]]) -> dict[str, int] | None:
    """Annotated CTCs per sample over its usable fields; None when a sample has no annotations.

    Fields segment quarantined are left out of the truth too: their cells were never counted.
    """
    counts = {}
    for sample in samples:
        path = raw_dir / sample / ANNOTATIONS_FILE
        if not path.is_file():
            return None
        table = read_annotations(path, ("field", "label"))
        kept = [(sample, str(f)) in usable for f in table["field"]]
        counts[sample] = int((table.loc[kept, "label"] == CTC_LABEL).sum())
    return counts
