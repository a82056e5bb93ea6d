"""What evaluate found, and where it goes: ``reports/metrics.json``, plots, MLflow.

:class:`EvaluationReport` is the typed result the CLI formats; :func:`write_reports` writes the
files DVC tracks; :func:`log_test_results` puts the test metrics and figures onto each backbone's
training run (ids from ``models/<backbone>/run.json``); :func:`results_table` and
:func:`selection_line` are what ``ctcid evaluate`` prints.
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
from rich.table import Table

from ctcid.clinical import CUTOFFS
from ctcid.config.mlflow import MlflowParams
from ctcid.evaluation.baselines import GBM, RULE
from ctcid.evaluation.endpoints import PatientAssessment, RuleComparison
from ctcid.metrics import METRIC_NAMES, BinaryMetrics, PatientCounts, calibration
from ctcid.paths import METRICS_FILE, PATIENT_COUNTS_FILE, PREDICTIVE_VALUES_FILE, TEST_PREDICTIONS_FILE
from ctcid.plots import (
    plot_confusion,
    plot_patient_counts,
    plot_predictive_values,
    plot_reliability,
    plot_review_burden,
    plot_roc,
    write_confusion_csv,
    write_roc_csv,
)
from ctcid.tracking import log_artifacts, log_data_inputs, log_metrics, open_experiment

log = logging.getLogger(__name__)


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
    cv_objective: float | None = None  # tune.objective on the out-of-fold predictions
    run: dict[str, str] | None = None
    endpoints: PatientAssessment | None = None  # per patient, every detection counted
    versus_rule: RuleComparison | None = None  # paired with the rule (None for the rule itself)
    counting_threshold: float | None = None  # the one its per-patient counts were counted at

    def report(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "default": _rates(self.default),
            "operating": self.operating.as_dict(),
            "ci95": {k: {"low": lo, "high": hi} for k, (lo, hi) in self.intervals.items()},
        }
        if self.cv_auc is not None:
            values["cv_auc"] = self.cv_auc
        if self.cv_objective is not None:
            values["cv_objective"] = self.cv_objective
        if self.patients is not None:
            values["patients"] = self.patients.as_dict()
        if self.counting_threshold is not None:
            values["counting_threshold"] = self.counting_threshold
        if self.endpoints is not None:
            values.update(self.endpoints.report())
        if self.versus_rule is not None:
            values["versus_rule"] = self.versus_rule.report()
        if self.probabilistic:
            values["calibration"] = calibration(self.y_true, self.y_score).as_dict()
        return values

    @property
    def probabilistic(self) -> bool:
        """Scores are probabilities (the rule's are 0/1 calls: no calibration, no ROC curve)."""
        return self.name != RULE


@dataclass(frozen=True)
class TestSummary:
    cells: int  # labelled test cells
    ctc: int
    samples: int
    detections: int  # every detection of the test samples, labelled or not
    count_source: str
    # the split's prior-corrected counting threshold: what a model saved without its own counts at;
    # each model's own is its evaluation's counting_threshold
    count_threshold: float


@dataclass(frozen=True)
class EvaluationReport:
    """What evaluate found; :meth:`to_dict` is the content of ``reports/metrics.json``."""

    selected: str
    test: TestSummary
    models: dict[str, ModelEvaluation]
    selected_by: str = "cv_objective"
    drift: dict[str, float] | None = None  # test fields against the training fields' reference
    run: dict[str, str] | None = None  # commit and date (tracking.run_stamp)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "selected": self.selected,
            "selected_by": self.selected_by,
            "test": asdict(self.test),
            "models": {name: e.report() for name, e in self.models.items()},
        }
        if self.drift is not None:
            values["drift"] = self.drift
        if self.run is not None:
            values["run"] = self.run
        return values


def number(value: float | None) -> str:
    """A metric in a terminal table: three decimals, '-' when missing or NaN."""
    return "-" if value is None or value != value else f"{value:.3f}"


def results_table(report: EvaluationReport, reports_dir: Path) -> Table:
    """Every model on the test set at its operating threshold; the selected one is starred.

    The per-patient columns: count MAE, its difference to the rule's on the same patients (< 0:
    counts better), and the call ">= 1 CTC" (sensitivity / specificity over patients).
    """
    test = report.test
    title = f"test set ({test.cells} cells, {test.ctc} CTC, {test.samples} patients) -> {reports_dir}"
    table = Table(title=title)
    columns = (
        "model", "CV AUC", "AUC", "sens", "spec", "threshold", "MAE", "MAE - rule", ">=1 sens", ">=1 spec"
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, evaluation in report.models.items():
        operating = evaluation.operating
        values = evaluation.endpoints.values if evaluation.endpoints is not None else {}
        versus = evaluation.versus_rule
        table.add_row(
            f"{name} *" if name == report.selected else name,
            number(evaluation.cv_auc),
            number(operating.auc),
            number(operating.sensitivity),
            number(operating.specificity),
            number(operating.threshold),
            number(evaluation.patients.mae if evaluation.patients is not None else None),
            number(versus.mae.difference if versus is not None else None),
            number(values.get("sensitivity_ge1")),
            number(values.get("specificity_ge1")),
        )
    return table


def selection_line(report: EvaluationReport, objective: str) -> str:
    """Which model was selected, and on what (``objective``: params' tune.objective)."""
    return f"selected on CV {objective} (CV AUC breaks ties): {report.selected} (*)"


def write_reports(
    report: EvaluationReport, predictions: pd.DataFrame, reports_dir: Path
) -> dict[str, dict[str, Path]]:
    """Write metrics.json, plot data and PNGs; returns each model's figures for MLflow."""
    evaluations, selected = report.models, report.selected
    plots = reports_dir / "plots"
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / METRICS_FILE).write_text(json.dumps(json_safe(report.to_dict()), indent=1) + "\n")
    predictions.to_csv(reports_dir / TEST_PREDICTIONS_FILE, index=False, float_format="%.6g")
    roc = plot_roc(
        {n: (e.y_true, e.y_score) for n, e in evaluations.items() if e.probabilistic},
        plots / "roc.png",
        title="Test ROC",
        points={n: e.operating for n, e in evaluations.items() if not e.probabilistic},
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
    plot_reliability(
        {n: calibration(e.y_true, e.y_score) for n, e in evaluations.items() if e.probabilistic},
        plots / "reliability.png",
        title="Test calibration",
    )
    write_patient_figures(evaluations, selected, plots)
    chosen = evaluations[selected].patients
    if chosen is not None:
        figures[selected]["patient_counts"] = plot_patient_counts(
            chosen, plots / "patient_counts.png", title=f"CTCs per test patient, {selected}"
        )
    return figures


def write_patient_figures(evaluations: dict[str, ModelEvaluation], selected: str, plots: Path) -> None:
    """Per-patient table of every scorer, PPV/NPV across prevalence, the review burden."""
    tables = {n: e.endpoints.table for n, e in evaluations.items() if e.endpoints is not None}
    if not tables:
        return
    first = next(iter(tables.values()))
    patients = first[["sample", "true_count"]].copy()
    for name, table in tables.items():
        patients[f"count_{name}"] = table["predicted_count"].to_numpy()
        patients[f"flagged_{name}"] = table["flagged"].to_numpy()
    patients["detections"] = first["detections"].to_numpy()
    patients.to_csv(plots / PATIENT_COUNTS_FILE, index=False)
    curves = [e.endpoints.curves.assign(model=n) for n, e in evaluations.items() if e.endpoints is not None]
    table = pd.concat(curves, ignore_index=True)
    table.to_csv(plots / PREDICTIVE_VALUES_FILE, index=False, float_format="%.4g")
    shown = [n for n in (selected, GBM, RULE) if n in tables]
    for cutoff in CUTOFFS:
        plot_predictive_values(
            {n: evaluations[n].endpoints.curves for n in shown},  # type: ignore[union-attr]
            cutoff,
            plots / f"predictive_values_ge{cutoff}.png",
            f"Test patients, call >= {cutoff} CTC",
        )
    plot_review_burden(tables, plots / "review_burden.png", "Test patients")


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
        log_data_inputs(client, run_id, "test")
        log_artifacts(client, run_id, figures[name].values(), "test")
        if e.patients is not None:
            with tempfile.TemporaryDirectory() as tmp:
                table = Path(tmp) / "test_patient_counts.csv"
                e.patients.table.to_csv(table, index=False)
                log_artifacts(client, run_id, [table], "test")


def _rates(metrics: BinaryMetrics) -> dict[str, float]:
    return {name: getattr(metrics, name) for name in METRIC_NAMES}


def json_safe(value: Any) -> Any:
    """NaN/inf become null: JSON has no NaN, and DVC would reject the file."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
