"""The evaluate stage: every trained backbone and the baselines on the held-out test set.

* cell level: metrics at threshold 0.5 and at each model's operating threshold (chosen on its
  out-of-fold predictions, never here), 95 % bootstrap intervals at the operating threshold;
* patient level: predicted CTC count over *all* detections of each test sample (unlabelled and
  unmatched ones too: the model sees them in practice), at the prior-corrected counting threshold
  (:func:`counting_threshold`), against the true count from the
  sample's ``annotations.csv``, or from its labelled cells when annotations are missing;
* selection: the backbone with the best cross-validated AUC (the test set only reports);
* outputs: ``reports/metrics.json`` (DVC metrics), ROC/confusion CSVs for ``dvc plots``, PNGs,
  ``reports/test_predictions.csv``, and the test metrics and figures on each backbone's MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from ctcid.config import MlflowParams, Params
from ctcid.contracts import (
    ANNOTATIONS_FILE,
    CTC_LABEL,
    cell_labels,
    open_crops,
    read_annotations,
    read_manifest,
)
from ctcid.errors import CtcidError
from ctcid.evaluation.baselines import evaluate_baselines
from ctcid.metrics import (
    METRIC_NAMES,
    BinaryMetrics,
    PatientCounts,
    binary_metrics,
    bootstrap_intervals,
    patient_counts,
    prior_shift_threshold,
)
from ctcid.model.predict import MODEL_FILE, RUN_FILE, load_model, score_crops
from ctcid.model.trainer import resolve_device
from ctcid.paths import StageInputs
from ctcid.plots import plot_confusion, plot_patient_counts, plot_roc, write_confusion_csv, write_roc_csv
from ctcid.split import Split, read_split
from ctcid.tracking import log_artifacts, log_metrics, open_experiment

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

    def test_positions(self) -> np.ndarray:
        """Position of each labelled test cell within ``detections``."""
        return pd.Index(self.detections).get_indexer(self.rows)


@dataclass(frozen=True)
class ModelEvaluation:
    name: str
    y_true: np.ndarray
    y_score: np.ndarray  # labelled test cells
    default: BinaryMetrics  # threshold 0.5
    operating: BinaryMetrics  # the model's own threshold (0.5 for the baselines)
    intervals: dict[str, tuple[float, float]]
    patients: PatientCounts | None
    cv_auc: float | None = None
    run: dict[str, str] | None = None

    def report(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "default": _rates(self.default),
            "operating": self.operating.as_dict(),
            "ci95": {k: {"low": lo, "high": hi} for k, (lo, hi) in self.intervals.items()},
        }
        if self.cv_auc is not None:
            values["cv_auc"] = self.cv_auc
        if self.patients is not None:
            values["patients"] = self.patients.as_dict()
        return values


def test_set(manifest: pd.DataFrame, split: Split, raw_dir: Path | None) -> TestSet:
    labels = cell_labels(manifest, split.label_source)
    rows = split.test
    if rows.size and rows.max() >= len(manifest):
        raise CtcidError("split.json names rows beyond the manifest; re-run 'ctcid split' (dvc repro)")
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
    )


def _annotated_ctcs(path: Path) -> int:
    return int((read_annotations(path, ("label",))["label"] == CTC_LABEL).sum())


@dataclass(frozen=True)
class TestSummary:
    cells: int  # labelled test cells
    ctc: int
    samples: int
    detections: int  # every detection of the test samples, labelled or not
    count_source: str
    count_threshold: float


@dataclass(frozen=True)
class EvaluationReport:
    """What evaluate found; :meth:`to_dict` is the content of ``reports/metrics.json``."""

    selected: str
    test: TestSummary
    models: dict[str, ModelEvaluation]
    selected_by: str = "cv_auc"

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "selected_by": self.selected_by,
            "test": asdict(self.test),
            "models": {name: e.report() for name, e in self.models.items()},
        }


def evaluate_models(
    params: Params, inputs: StageInputs, models_dir: Path, reports_dir: Path, raw_dir: Path | None
) -> EvaluationReport:
    """Evaluate, write every report, log the test results to each backbone's MLflow run."""
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
    count_threshold = counting_threshold(split)
    crops = open_crops(inputs.crops)
    evaluations: dict[str, ModelEvaluation] = {}
    for backbone in params.train.backbones:
        evaluations[backbone], predictions[backbone] = score_backbone(
            models_dir / backbone, crops, tests, count_threshold, params
        )
    evaluations.update(score_baselines(manifest, split, tests, params.train.bootstrap, params.seed))

    summary = TestSummary(
        cells=int(tests.rows.size),
        ctc=int(tests.y_true.sum()),
        samples=len(tests.true_counts),
        detections=int(tests.detections.size),
        count_source=tests.count_source,
        count_threshold=count_threshold,
    )
    report = EvaluationReport(select_backbone(evaluations, params.train.backbones), summary, evaluations)
    figures = write_reports(report, predictions, reports_dir)
    log_test_results(params.mlflow, evaluations, figures)
    return report


def score_backbone(
    model_dir: Path, crops: np.ndarray, tests: TestSet, count_threshold: float, params: Params
) -> tuple[ModelEvaluation, np.ndarray]:
    """One trained backbone on the test cells and on every detection of the test samples."""
    loaded = load_model(model_dir / MODEL_FILE, resolve_device(params.train.device))
    scores = score_crops(loaded, crops, tests.detections)
    y_score = scores[tests.test_positions()]
    threshold = loaded.info.threshold
    evaluation = ModelEvaluation(
        name=model_dir.name,
        y_true=tests.y_true,
        y_score=y_score,
        default=binary_metrics(tests.y_true, y_score, 0.5),
        operating=binary_metrics(tests.y_true, y_score, threshold),
        intervals=bootstrap_intervals(tests.y_true, y_score, threshold, params.train.bootstrap, params.seed),
        patients=patient_counts(tests.samples, scores >= count_threshold, tests.true_counts),
        cv_auc=loaded.info.cv.get("auc"),
        run=_read_run(model_dir / RUN_FILE),
    )
    return evaluation, scores


def score_baselines(
    manifest: pd.DataFrame, split: Split, tests: TestSet, n_boot: int, seed: int
) -> dict[str, ModelEvaluation]:
    """The rule and the feature GBM on the same test cells, at threshold 0.5."""
    rule_calls = manifest["rule_label"].to_numpy()[tests.detections] == 1
    evaluations = {}
    for name, (y_true, y_score) in evaluate_baselines(manifest, split, seed).items():
        at_half = binary_metrics(y_true, y_score, 0.5)
        evaluations[name] = ModelEvaluation(
            name=name,
            y_true=y_true,
            y_score=y_score,
            default=at_half,
            operating=at_half,
            intervals=bootstrap_intervals(y_true, y_score, 0.5, n_boot, seed),
            # the rule labels every detection; the GBM baseline only scores the labelled test cells
            patients=patient_counts(tests.samples, rule_calls, tests.true_counts) if name == "rule" else None,
        )
    return evaluations


def counting_threshold(split: Split) -> float:
    """Cut-off for counting CTCs per patient: the training population's prevalence, prior-corrected.

    The operating threshold is chosen for sensitivity on balanced out-of-fold predictions; applied
    to every detection of a patient, where CTCs are a few per cent, it over-counts by the false
    positives of thousands of leukocytes. Counting wants the fewest errors at the real prevalence.
    """
    train = split.counts.get("train", {})
    ctc, non_ctc = int(train.get("ctc", 0)), int(train.get("non_ctc", 0))
    if ctc == 0 or non_ctc == 0:
        return 0.5
    return prior_shift_threshold(ctc / (ctc + non_ctc))


def select_backbone(evaluations: dict[str, ModelEvaluation], backbones: list[str]) -> str:
    """Highest cross-validated AUC; params order breaks ties. The test set never chooses."""

    def cv_auc(name: str) -> float:
        auc = evaluations[name].cv_auc
        return auc if auc is not None and math.isfinite(auc) else -math.inf

    return max(backbones, key=lambda name: (cv_auc(name), -backbones.index(name)))


def write_reports(
    report: EvaluationReport, predictions: pd.DataFrame, reports_dir: Path
) -> dict[str, dict[str, Path]]:
    """Write metrics.json, plot data and PNGs; returns each model's figures for MLflow."""
    evaluations, selected = report.models, report.selected
    plots = reports_dir / "plots"
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "metrics.json").write_text(json.dumps(_finite(report.to_dict()), indent=1) + "\n")
    predictions.to_csv(reports_dir / "test_predictions.csv", index=False, float_format="%.6g")
    roc = plot_roc(
        {n: (e.y_true, e.y_score) for n, e in evaluations.items()}, plots / "roc.png", title="Test ROC"
    )
    figures: dict[str, dict[str, Path]] = {}
    for name, e in evaluations.items():
        write_roc_csv(e.y_true, e.y_score, plots / "roc" / f"{name}.csv")
        write_confusion_csv(e.y_true, e.y_score >= e.operating.threshold, plots / "confusion" / f"{name}.csv")
        figures[name] = {
            "roc": roc,
            "confusion": plot_confusion(
                e.operating,
                plots / f"confusion_{name}.png",
                title=f"{name}, test, threshold {e.operating.threshold:.3g}",
            ),
        }
    chosen = evaluations[selected].patients
    if chosen is not None:
        figures[selected]["patient_counts"] = plot_patient_counts(
            chosen, plots / "patient_counts.png", title=f"CTCs per test patient, {selected}"
        )
    return figures


def log_test_results(
    mlflow: MlflowParams, evaluations: dict[str, ModelEvaluation], figures: dict[str, dict[str, Path]]
) -> None:
    """Test metrics and figures onto each backbone's training run (ids from models/<b>/run.json)."""
    runs = {name: e for name, e in evaluations.items() if e.run is not None}
    if not runs:
        return
    client, _ = open_experiment(mlflow)
    for name, e in runs.items():
        assert e.run is not None
        run_id = e.run["run_id"]
        try:
            client.get_run(run_id)
        except MlflowException:
            log.warning(
                "MLflow run %s of %s not found at %s; test results not logged there",
                run_id,
                name,
                mlflow.tracking_uri,
            )
            continue
        metrics = {
            "test": _rates(e.default),
            "test_operating": e.operating.as_dict(),
            "test_ci95": {k: {"low": lo, "high": hi} for k, (lo, hi) in e.intervals.items()},
        }
        if e.patients is not None:
            metrics["test_patients"] = e.patients.as_dict()
        log_metrics(client, run_id, metrics)
        log_artifacts(client, run_id, figures[name].values(), "test")
        if e.patients is not None:
            with tempfile.TemporaryDirectory() as tmp:
                table = Path(tmp) / "test_patient_counts.csv"
                e.patients.table.to_csv(table, index=False)
                log_artifacts(client, run_id, [table], "test")


def _read_run(path: Path) -> dict[str, str] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _rates(metrics: BinaryMetrics) -> dict[str, float]:
    return {name: getattr(metrics, name) for name in METRIC_NAMES}


def _finite(value: Any) -> Any:
    """NaN/inf become null: JSON has no NaN, and DVC would reject the file."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
