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
from ctcid.evaluation.baselines import GBM, RULE, GbmBaseline
from ctcid.external.settings import ExternalConfig
from ctcid.intensity import Levels, model_input
from ctcid.model.count_threshold import model_count_threshold
from ctcid.model.predict import load_model, score_crops
from ctcid.model.trainer import resolve_device
from ctcid.paths import MODEL_FILE
from ctcid.registry.pyfunc import file_sha256
from ctcid.registry_client import CHAMPION, RegistryClient
from ctcid.serving.served import ServedModel

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
    repeat_scores: np.ndarray | None = None  # over the re-imaged specimens' detections, if any

    @property
    def probabilistic(self) -> bool:
        return self.name != RULE


@dataclass(frozen=True)
class Images:
    """Detections to score: a manifest, its crops and every row's field levels."""

    manifest: pd.DataFrame
    crops: np.ndarray
    levels: Levels


def served_champion(params: ExternalConfig) -> ServedModel | None:
    """The champion as packaged (its stored settings, its model hash to find its backbone), or None
    when the registry has none yet."""
    from ctcid.serving.package import champion_served

    registry = RegistryClient(params.mlflow)
    if not registry.exists() or registry.champion() is None:
        return None
    return champion_served(params)


def backbone_scorers(
    params: ExternalConfig,
    models_dir: Path,
    images: Images,
    count_threshold: float,
    repeats: Images | None = None,
) -> dict[str, Scorer]:
    """Each trained backbone of ``train.backbones`` found under ``models_dir``, at its own thresholds
    (``count_threshold``, the split's prior-corrected one, counts for a model saved without its own)."""
    device = resolve_device(params.train.device)
    scorers = {}
    for backbone in params.train.backbones:
        path = models_dir / backbone / MODEL_FILE
        if not path.is_file():
            continue
        loaded = load_model(path, device)

        def score(part: Images, loaded=loaded) -> np.ndarray:
            return score_crops(loaded, part.crops, levels=part.levels).astype(np.float64)

        scorers[backbone] = Scorer(
            backbone,
            backbone,
            score(images),
            loaded.info.threshold,
            model_count_threshold(loaded.info, count_threshold),
            None if repeats is None else score(repeats),
        )
    return scorers


def champion_scorer(
    params: ExternalConfig,
    served: ServedModel,
    models_dir: Path,
    images: Images,
    scored: dict[str, Scorer],
    repeats: Images | None = None,
) -> Scorer:
    """The champion's scores: a trained backbone's when the model file is the same, else the registry's."""
    label = f"champion ({served.label}, {served.backbone})"
    thresholds = (served.operating_threshold, served.counting_threshold)
    for backbone, scorer in scored.items():
        path = models_dir / backbone / MODEL_FILE
        if path.is_file() and file_sha256(path) == served.model_sha256:
            return Scorer(CHAMPION_NAME, label, scorer.scores, *thresholds, scorer.repeat_scores)
    registry = RegistryClient(params.mlflow)
    model = registry.load(registry.version(served.version))

    def score(part: Images) -> np.ndarray:
        parts = []
        for start in range(0, len(part.crops), _CHUNK):
            rows = np.arange(start, min(start + _CHUNK, len(part.crops)))
            batch = model_input(part.crops[rows], part.levels.rows(rows), served.standardise)
            parts.append(model.predict(batch)["ctc_probability"].to_numpy())
        return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)

    return Scorer(
        CHAMPION_NAME, label, score(images), *thresholds, None if repeats is None else score(repeats)
    )


def gbm_scorer(gbm: GbmBaseline, images: Images, repeats: Images | None = None) -> Scorer:
    """The feature GBM at its out-of-fold operating and counting thresholds, chosen as the CNNs' are."""
    return Scorer(
        GBM,
        "gradient boosting (features)",
        gbm.score(images.manifest),
        gbm.threshold,
        gbm.counting,
        None if repeats is None else gbm.score(repeats.manifest),
    )


def rule_scorer(manifest: pd.DataFrame, repeats: pd.DataFrame | None = None) -> Scorer:
    def calls(table: pd.DataFrame) -> np.ndarray:
        return table["rule_label"].to_numpy(dtype=np.float64)

    repeat_calls = None if repeats is None else calls(repeats)
    return Scorer(RULE, "rule (CD45- and CEP8 >= 3)", calls(manifest), 0.5, 0.5, repeat_calls)


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
