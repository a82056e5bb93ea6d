"""The evaluate stage: every trained backbone and the baselines on the held-out test set.

* cell level: metrics at threshold 0.5 and at each model's operating threshold (chosen on its
  out-of-fold predictions, never here), 95 % bootstrap intervals at the operating threshold;
* patient level: predicted CTC count over *all* detections of each test sample (unlabelled and
  unmatched ones too: the model sees them in practice), at each model's own counting threshold
  (chosen on its out-of-fold predictions for the fewest per-patient count errors,
  :mod:`ctcid.model.count_threshold`; models saved before it count at the split's prior-corrected
  one, :func:`counting_threshold`), against the true count from the
  sample's ``annotations.csv``, or from its labelled cells when annotations are missing;
* selection: the backbone with the best cross-validated ``tune.objective`` (out-of-fold
  specificity at the target sensitivity by default), CV AUC breaking ties; the test set only reports;
* outputs: ``reports/metrics.json`` (DVC metrics), ROC/confusion CSVs for ``dvc plots``, PNGs,
  ``reports/test_predictions.csv``, and the test metrics and figures on each backbone's MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.clinical import cluster_bootstrap_intervals
from ctcid.config.drift import DriftParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.train import TrainParams
from ctcid.config.tune import TuneParams
from ctcid.contracts import (
    ANNOTATIONS_FILE,
    CTC_LABEL,
    cell_labels,
    open_crops,
    read_annotations,
    read_manifest,
)
from ctcid.errors import CtcidError
from ctcid.evaluation.baselines import GBM, RULE, fit_gbm_baseline
from ctcid.evaluation.drift import drift_summary, field_feature_table, fit_reference, write_reference
from ctcid.evaluation.endpoints import Truth, assess_patients, compare_with_rule
from ctcid.evaluation.report import (
    EvaluationReport,
    ModelEvaluation,
    TestSummary,
    log_test_results,
    write_reports,
)
from ctcid.intensity import Levels, manifest_levels
from ctcid.metrics import binary_metrics, patient_counts
from ctcid.model.count_threshold import model_count_threshold
from ctcid.model.predict import load_model, score_crops
from ctcid.model.trainer import resolve_device
from ctcid.paths import DRIFT_REFERENCE_FILE, MODEL_FILE, RUN_FILE, SPLIT_NAME, StageInputs
from ctcid.split import Split, counting_threshold, read_split
from ctcid.tracking import run_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestSet:
    """Labelled test cells and every detection of the test samples (a superset)."""

    rows: np.ndarray  # manifest rows of the labelled test cells (split.test)
    y_true: np.ndarray
    detections: np.ndarray  # manifest rows of all detections of the test samples
    samples: np.ndarray  # sample id of each detection
    true_counts: dict[str, int]
    count_source: str  # "annotations" or "labelled_cells"
    rule: np.ndarray  # the rule's call (0/1) on every detection

    def test_positions(self) -> np.ndarray:
        """Position of each labelled test cell within ``detections``."""
        return pd.Index(self.detections).get_indexer(self.rows)

    def truth(self) -> Truth:
        """The test patients as the per-patient endpoints read them."""
        return Truth(self.test_positions(), self.y_true, self.samples, self.true_counts)


def test_set(manifest: pd.DataFrame, split: Split, raw_dir: Path | None) -> TestSet:
    labels = cell_labels(manifest, split.label_source)
    rows = split.test
    if rows.size and rows.max() >= len(manifest):
        raise CtcidError(f"{SPLIT_NAME} names rows beyond the manifest; re-run 'ctcid split' (dvc repro)")
    sample = manifest["sample"].astype(str).to_numpy()
    test_samples = np.unique(sample[rows])
    detections = np.flatnonzero(np.isin(sample, test_samples))
    annotated = raw_dir is not None and all((raw_dir / s / ANNOTATIONS_FILE).is_file() for s in test_samples)
    if annotated:
        assert raw_dir is not None
        true_counts = {s: _annotated_ctcs(raw_dir / s / ANNOTATIONS_FILE) for s in test_samples}
    else:
        positive = labels.iloc[detections].fillna(0).to_numpy(dtype=np.int64) == 1
        counted = pd.Series(positive, index=sample[detections]).groupby(level=0).sum()
        true_counts = {s: int(counted.get(s, 0)) for s in test_samples}
    return TestSet(
        rows=rows,
        y_true=labels.iloc[rows].to_numpy(dtype=np.int64),
        detections=detections,
        samples=sample[detections],
        true_counts=true_counts,
        count_source="annotations" if annotated else "labelled_cells",
        rule=manifest["rule_label"].to_numpy(dtype=np.float64)[detections],
    )


class EvaluateConfig(StageConfig):
    """What the evaluate stage reads: which models to score and how, never how they were trained."""

    seed: int
    channels: list[str]
    train: view(TrainParams, "backbones", "bootstrap", "device", "target_sensitivity")  # type: ignore[valid-type]
    tune: view(TuneParams, "objective")  # type: ignore[valid-type]  # the CV figure selection reports
    drift: DriftParams
    mlflow: view(MlflowParams, "tracking_uri", "artifact_location", "experiment")  # type: ignore[valid-type]


def _annotated_ctcs(path: Path) -> int:
    return int((read_annotations(path, ("label",))["label"] == CTC_LABEL).sum())


def evaluate_models(
    params: EvaluateConfig, inputs: StageInputs, models_dir: Path, reports_dir: Path, raw_dir: Path | None
) -> EvaluationReport:
    """Evaluate, write every report, log the test results to each backbone's MLflow run."""
    params = EvaluateConfig.project(params)  # whatever the caller holds, evaluation reads only its keys
    manifest = read_manifest(inputs.manifest)
    split = read_split(inputs.split)
    tests = test_set(manifest, split, raw_dir)
    predictions = pd.DataFrame(
        {
            "crop_index": tests.detections,
            "sample": tests.samples,
            "label": cell_labels(manifest, split.label_source).iloc[tests.detections].to_numpy(),
            "in_test": np.isin(tests.detections, tests.rows),
        }
    )
    count_threshold = counting_threshold(split)  # what models without their own count at
    crops = open_crops(inputs.crops)
    levels = manifest_levels(manifest, params.channels)
    evaluations: dict[str, ModelEvaluation] = {}
    for backbone in params.train.backbones:
        evaluations[backbone], predictions[backbone] = score_backbone(
            models_dir / backbone, crops, tests, count_threshold, params, levels
        )
    baselines, baseline_scores = score_baselines(
        manifest, split, tests, params.train.bootstrap, params.seed, params.train.target_sensitivity
    )
    evaluations.update(baselines)
    for name, scores in baseline_scores.items():
        predictions[name] = scores

    summary = TestSummary(
        cells=int(tests.rows.size),
        ctc=int(tests.y_true.sum()),
        samples=len(tests.true_counts),
        detections=int(tests.detections.size),
        count_source=tests.count_source,
        count_threshold=count_threshold,
    )
    drift = test_drift(params, manifest, crops, split, raw_dir, reports_dir / DRIFT_REFERENCE_FILE)
    selected = select_backbone(evaluations, params.train.backbones)
    report = EvaluationReport(selected, summary, evaluations, drift=drift, run=run_stamp())
    figures = write_reports(report, predictions, reports_dir)
    log_test_results(params.mlflow, evaluations, figures)
    return report


def score_backbone(
    model_dir: Path,
    crops: np.ndarray,
    tests: TestSet,
    count_threshold: float,
    params: EvaluateConfig,
    levels: Levels,
) -> tuple[ModelEvaluation, np.ndarray]:
    """One trained backbone on the test cells and on every detection of the test samples.

    It counts at its own counting threshold; ``count_threshold`` (the split's prior-corrected one)
    only for a model saved before ctcid chose one.
    """
    loaded = load_model(model_dir / MODEL_FILE, resolve_device(params.train.device))
    scores = score_crops(loaded, crops, tests.detections, levels=levels)
    evaluation = evaluate_scores(
        model_dir.name,
        scores,
        tests,
        loaded.info.threshold,
        model_count_threshold(loaded.info, count_threshold),
        params.train.bootstrap,
        params.seed,
        cv_auc=loaded.info.cv.get("auc"),
        run=_read_run(model_dir / RUN_FILE),
        cv_objective=loaded.info.cv.get(f"objective.{params.tune.objective}"),
    )
    return evaluation, scores


def evaluate_scores(
    name: str,
    scores: np.ndarray,
    tests: TestSet,
    threshold: float,
    count_threshold: float,
    n_boot: int,
    seed: int,
    cv_auc: float | None = None,
    run: dict[str, str] | None = None,
    cv_objective: float | None = None,
) -> ModelEvaluation:
    """Metrics of any scorer's ``scores`` over ``tests.detections`` (the promotion gate's too).

    Cell intervals resample whole patients (their cells share a slide and a stain); the per-patient
    endpoints count every detection at ``count_threshold``; every scorer but the rule is paired
    with the rule on the same cells and patients. The rule's 0/1 calls have no AUC.
    """
    truth = tests.truth()
    y_score = scores[truth.labelled]
    is_rule = name == RULE
    operating = binary_metrics(tests.y_true, y_score, threshold)
    intervals = cluster_bootstrap_intervals(
        tests.y_true, y_score, truth.cell_patients, threshold, n_boot, seed
    )
    if is_rule:
        operating = replace(operating, auc=math.nan)
        intervals = {**intervals, "auc": (math.nan, math.nan)}
    return ModelEvaluation(
        name=name,
        y_true=tests.y_true,
        y_score=y_score,
        default=replace(binary_metrics(tests.y_true, y_score, 0.5), auc=operating.auc),
        operating=operating,
        intervals=intervals,
        patients=patient_counts(tests.samples, scores >= count_threshold, tests.true_counts),
        cv_auc=cv_auc,
        cv_objective=cv_objective,
        run=run,
        endpoints=assess_patients(truth, scores, threshold, count_threshold, n_boot, seed),
        versus_rule=None
        if is_rule
        else compare_with_rule(truth, scores, threshold, count_threshold, tests.rule, n_boot, seed),
        counting_threshold=count_threshold,
    )


def score_baselines(
    manifest: pd.DataFrame, split: Split, tests: TestSet, n_boot: int, seed: int, target_sensitivity: float
) -> tuple[dict[str, ModelEvaluation], dict[str, np.ndarray]]:
    """The rule and the feature GBM on every detection of the test samples, as the CNNs are.

    The GBM's operating and counting thresholds come from its own out-of-fold predictions, chosen
    as the CNNs' are (:func:`~ctcid.evaluation.baselines.fit_gbm_baseline`).
    Returns the evaluations and each baseline's scores over the detections.
    """
    gbm = fit_gbm_baseline(manifest, split, seed, target_sensitivity)
    scores = {GBM: gbm.score(manifest, tests.detections), RULE: tests.rule}
    evaluations = {
        GBM: evaluate_scores(GBM, scores[GBM], tests, gbm.threshold, gbm.counting, n_boot, seed),
        RULE: evaluate_scores(RULE, scores[RULE], tests, 0.5, 0.5, n_boot, seed),
    }
    return evaluations, scores


def test_drift(
    params: EvaluateConfig,
    manifest: pd.DataFrame,
    crops: np.ndarray,
    split: Split,
    raw_dir: Path | None,
    reference_path: Path,
) -> dict[str, float] | None:
    """Fit the drift reference on the training fields, write it, and score the test fields with it.

    The reference is what the registered model carries (the service flags unfamiliar fields with
    it). Fields of test patients are left out of it; with ``split.by: cell`` every patient is on
    both sides, so the test fields' drift is then in-sample and optimistic. None without raw fields.
    """
    fields = manifest[["sample", "field"]].astype(str).drop_duplicates()
    tested = fields["sample"].isin(set(manifest["sample"].astype(str).to_numpy()[split.test]))
    reference = None
    if raw_dir is not None and raw_dir.is_dir():
        training = fields[~tested] if (~tested).any() else fields
        features = field_feature_table(raw_dir, manifest, crops, params.channels, fields=training)
        try:
            reference = fit_reference(features, params.drift.quantile, params.drift.folds, params.seed)
        except ValueError as error:  # too few readable training fields: nothing to compare with
            log.warning("no drift reference: %s", error)
    write_reference(reference_path, reference)
    if reference is None or raw_dir is None:
        return None
    test_fields = field_feature_table(raw_dir, manifest, crops, params.channels, fields=fields[tested])
    scored = reference.score(test_fields)
    return {**drift_summary(scored), "reference_fields": float(reference.n_fields)}


def select_backbone(evaluations: dict[str, ModelEvaluation], backbones: list[str]) -> str:
    """Best cross-validated objective, then CV AUC, then params order. The test set never chooses."""

    def known(value: float | None) -> float:
        return value if value is not None and math.isfinite(value) else -math.inf

    def key(name: str) -> tuple[float, float, int]:
        evaluation = evaluations[name]
        return known(evaluation.cv_objective), known(evaluation.cv_auc), -backbones.index(name)

    return max(backbones, key=key)


def _read_run(path: Path) -> dict[str, str] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
