"""The external stage's outputs: ``reports/external.json`` (DVC metrics), ``reports/external.md`` and,
per cohort, ``reports/external/<name>/`` with its tables and figures; and what ``ctcid external``
and ``ctcid external-cohort`` print (:func:`cohort_table`, :func:`drift_line`, :func:`cohort_line`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from ctcid.clinical import CUTOFFS
from ctcid.evaluation.drift import drift_summary
from ctcid.evaluation.report import json_safe, number
from ctcid.evaluation.tables import endpoint_sections, fmt
from ctcid.external.assess import CohortResult
from ctcid.external.cohort import CohortInfo
from ctcid.external.scoring import CHAMPION_NAME, GBM, RULE
from ctcid.external.settings import ExternalConfig
from ctcid.paths import EXTERNAL_FILE, EXTERNAL_SUMMARY_FILE, PATIENT_COUNTS_FILE, PREDICTIVE_VALUES_FILE
from ctcid.plots import (
    plot_bland_altman,
    plot_drift_scores,
    plot_predictive_values,
    plot_reliability,
    plot_review_burden,
)
from ctcid.registry.gallery import draw_rows


@dataclass(frozen=True)
class ReportFiles:
    """Where a set of cohorts' reports go: the external stage's, or the audit's (sealed cohorts)."""

    title: str
    json_name: str
    summary_name: str
    folder: str  # <reports>/<folder>/<cohort>/: tables and figures


EXTERNAL_REPORTS = ReportFiles("External validation", EXTERNAL_FILE, EXTERNAL_SUMMARY_FILE, "external")


def write_reports(
    results: Sequence[CohortResult],
    reports_dir: Path,
    params: ExternalConfig,
    files: ReportFiles = EXTERNAL_REPORTS,
    stamp: dict[str, str] | None = None,
) -> Path:
    """Every cohort's tables and figures, the metrics file and the plain-words summary."""
    values: dict[str, Any] = {"cohorts": {r.name: cohort_report(r) for r in results}}
    if stamp:
        values["run"] = stamp
    for result in results:
        write_cohort_files(result, reports_dir / files.folder / result.name, params)
    (reports_dir / files.summary_name).write_text(summary_markdown(results, values, files))
    return write_json(reports_dir / files.json_name, json_safe(values))


def cohort_table(result: CohortResult) -> Table:
    """One cohort on the terminal: each model's cell metrics, patient agreement and calibration."""
    table = Table(title=f"{result.name}: {result.cohort.info.description}")
    for column in ("model", "AUC", "sens", "spec", "patient MAE", "CCC", ">=1 ok", "Brier"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, assessment in result.assessments.items():
        cells, patients = assessment.operating, assessment.patients
        table.add_row(
            name,
            number(cells.auc if cells else None),
            number(cells.sensitivity if cells else None),
            number(cells.specificity if cells else None),
            number(patients.mae if patients else None),
            number(patients.ccc if patients else None),
            number(patients.agreement_ge1 if patients else None),
            number(assessment.calibration.brier if assessment.calibration else None),
        )
    return table


def drift_line(result: CohortResult) -> str:
    """How many of the cohort's fields and patients drift flagged."""
    flagged = int(result.fields["drift_flag"].sum())
    return (
        f"{result.name}: drift flags {flagged} of {len(result.fields)} fields, "
        f"{int(result.samples['drift_flag'].sum())} of {len(result.samples)} patients"
    )


def cohort_line(info: CohortInfo, out: Path) -> str:
    """What ``ctcid external-cohort`` made, and where."""
    return (
        f"{info.name} ({info.source}): {info.cells} cells from {info.fields} fields "
        f"({info.fields_quarantined} quarantined) -> {out}"
    )


def cohort_report(result: CohortResult) -> dict[str, Any]:
    info, truth = result.cohort.info, result.truth
    segmentation = result.cohort.segmentation
    return {
        "description": info.description,
        "source": info.source,
        "samples": int(result.samples["sample"].nunique()),
        "fields": info.fields,
        "fields_quarantined": info.fields_quarantined,
        "detections": info.cells,
        "labelled": int(truth.y_true.size),
        "ctc": int(truth.y_true.sum()),
        "prevalence": truth.prevalence,
        "segmentation": {
            k: segmentation[k]
            for k in ("detection_recall", "detection_precision", "spot_count_exact", "cd45_call_accuracy")
            if k in segmentation
        },
        "models": {name: a.report() for name, a in result.assessments.items()},
        "drift": drift_report(result),
    }


def write_cohort_files(result: CohortResult, out: Path, params: ExternalConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = result.cohort.manifest
    predictions = manifest[["crop_index", "sample", "field", "cep8_spots", "cd45_score", "true_label"]].copy()
    for name, assessment in result.assessments.items():
        predictions[name] = assessment.scorer.scores
    predictions.to_csv(out / "predictions.csv", index=False, float_format="%.6g")
    result.fields.to_csv(out / "drift_fields.csv", index=False, float_format="%.6g")
    result.samples.to_csv(out / "patients.csv", index=False, float_format="%.6g")
    for name in (CHAMPION_NAME, RULE):
        patients = result.assessments.get(name)
        if patients is not None and patients.patients is not None:
            plot_bland_altman(patients.patients, out / f"bland_altman_{name}.png", f"{result.name}, {name}")
    write_patient_files(result, out)
    curves = {n: a.calibration for n, a in result.assessments.items() if a.calibration is not None}
    if curves:
        plot_reliability(curves, out / "reliability.png", f"{result.name}: calibration")
    plot_drift_scores(
        result.fields["drift_score"].to_numpy(), result.reference.threshold, out / "drift.png", result.name
    )
    if CHAMPION_NAME in result.assessments:
        draw_review_gallery(result, out / "gallery.png", params)


def write_patient_files(result: CohortResult, out: Path) -> None:
    """PPV/NPV across prevalence at each cut-off, the review burden, every scorer's patients."""
    endpoints = {n: a.endpoints for n, a in result.assessments.items() if a.endpoints is not None}
    if not endpoints:
        return
    tables = []
    for name, assessment in endpoints.items():
        tables.append(assessment.table.assign(model=name))
    pd.concat(tables, ignore_index=True).to_csv(out / PATIENT_COUNTS_FILE, index=False)
    curves = [e.curves.assign(model=n) for n, e in endpoints.items()]
    table = pd.concat(curves, ignore_index=True)
    table.to_csv(out / PREDICTIVE_VALUES_FILE, index=False, float_format="%.4g")
    shown = {n: endpoints[n].curves for n in (CHAMPION_NAME, GBM, RULE) if n in endpoints}
    for cutoff in CUTOFFS:
        plot_predictive_values(
            shown, cutoff, out / f"predictive_values_ge{cutoff}.png", f"{result.name}, call >= {cutoff} CTC"
        )
    plot_review_burden({n: e.table for n, e in endpoints.items()}, out / "review_burden.png", result.name)


def review_rows(result: CohortResult) -> dict[str, np.ndarray]:
    """Crop indices for review: champion and rule disagreeing, the champion's worst errors."""
    champion = result.assessments[CHAMPION_NAME].scorer
    score = champion.scores
    call = score >= champion.operating
    rule = result.assessments[RULE].scorer.scores >= 0.5
    label = result.cohort.manifest["true_label"].astype("Float64").fillna(-1).to_numpy(dtype=np.float64)
    order_high, order_low = np.argsort(-score, kind="stable"), np.argsort(score, kind="stable")
    return {
        "champion CTC, rule not": order_high[(call & ~rule)[order_high]],
        "rule CTC, champion not": order_low[(rule & ~call)[order_low]],
        "champion false positive": order_high[(call & (label == 0))[order_high]],
        "champion missed CTC": order_low[(~call & (label == 1))[order_low]],
    }


def draw_review_gallery(result: CohortResult, path: Path, params: ExternalConfig) -> Path:
    manifest = result.cohort.manifest
    score = result.assessments[CHAMPION_NAME].scorer.scores
    spots, cd45 = manifest["cep8_spots"].to_numpy(), manifest["cd45_score"].to_numpy()

    def caption(index: int) -> str:
        return f"p={score[index]:.2f} s={spots[index]} c={cd45[index]:.1f}"

    return draw_rows(
        path,
        review_rows(result),
        result.cohort.crops,
        params.channels,
        caption,
        f"{result.name}: champion vs rule and truth (p: champion probability, s: CEP8 spots, c: CD45 score)",
        columns=params.external.gallery,
    )


def _drift_lines(cohort: dict[str, Any]) -> list[str]:
    drift, fields = cohort["drift"], cohort["drift"]["fields"]
    lines = [
        f"Drift: {int(fields['fields_flagged'])} of {int(fields['fields'])} fields flagged "
        f"({fmt(fields['share_flagged'])}; {int(fields['fields_flagged_imaging'])} for their imaging, "
        f"{int(fields['fields_flagged_cells'])} for their cells), "
        f"{drift['samples_flagged']} of {drift['samples']} patients; "
        f"median field score {fmt(fields['median_score'], 2)}, threshold {fmt(drift['threshold'], 2)}."
    ]
    if "champion_mae_flagged" in drift:
        lines.append(
            f"Champion count MAE on flagged patients {fmt(drift['champion_mae_flagged'], 2)}, "
            f"on the others {fmt(drift['champion_mae_unflagged'], 2)}."
        )
    prevalence = cohort["models"].get(CHAMPION_NAME, {}).get("prevalence")
    if prevalence:
        biases = ", ".join(
            f"{fmt(v, 1)} at {k.rsplit('_', 1)[-1]}"
            for k, v in prevalence.items()
            if k.startswith("bias_per_1000")
        )
        lines.append(
            "Champion's counting threshold is unbiased at a CTC prevalence of "
            f"{fmt(prevalence['break_even'])}; expected extra counts per 1000 cells by prevalence: {biases}."
        )
    return lines


def summary_markdown(
    results: Sequence[CohortResult], values: dict[str, Any], files: ReportFiles = EXTERNAL_REPORTS
) -> str:
    """``reports/external.md`` (or ``audit.md``): one section per cohort, tables a lab can read."""
    lines = [f"# {files.title}", ""]
    run = values.get("run")
    if run:
        lines += [f"Run: commit {run.get('commit', '?')}, {run.get('date', '?')}.", ""]
    for result in results:
        cohort = values["cohorts"][result.name]
        segmentation = ", ".join(f"{k} {fmt(v)}" for k, v in cohort["segmentation"].items())
        lines += [
            f"## {result.name}: {cohort['description']}",
            "",
            f"{cohort['samples']} patients, {cohort['fields']} fields "
            f"({cohort['fields_quarantined']} quarantined), {cohort['detections']} detections, "
            f"{cohort['labelled']} labelled ({cohort['ctc']} CTC, prevalence {fmt(cohort['prevalence'])}). "
            f"Segmentation: {segmentation}.",
            "",
            *endpoint_sections(cohort["models"]),
            *_drift_lines(cohort),
            "",
            f"Figures and tables: reports/{files.folder}/{result.name}/",
            "",
        ]
    return "\n".join(lines)


def drift_report(result: CohortResult) -> dict[str, Any]:
    """Drift of the cohort's fields and samples, and whether flagged samples were counted worse."""
    samples = result.samples
    report: dict[str, Any] = {
        "threshold": result.reference.threshold,
        "fields": drift_summary(result.fields),
        "samples": int(len(samples)),
        "samples_flagged": int(samples["drift_flag"].sum()),
        "share_samples_flagged": float(samples["drift_flag"].mean()) if len(samples) else math.nan,
    }
    if "true_count" in samples and f"count_{CHAMPION_NAME}" in samples:
        error = (samples[f"count_{CHAMPION_NAME}"] - samples["true_count"]).abs()
        flagged = samples["drift_flag"].astype(bool)
        report["champion_mae_flagged"] = float(error[flagged].mean()) if flagged.any() else math.nan
        report["champion_mae_unflagged"] = float(error[~flagged].mean()) if (~flagged).any() else math.nan
    return report


def write_json(path: Path, values: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=1, allow_nan=True) + "\n")
    return path
