"""Markdown tables of the endpoints, read from the JSON reports (``metrics.json``, ``external.json``,
``audit.json``), so that every page that shows them (external.md, audit.md, the README's generated
tables) prints the same numbers the same way.

Each function takes the ``models`` mapping of one report (model name -> its report dict, as
:meth:`ModelEvaluation.report` and :meth:`Assessment.report` write it) and returns lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Models = Mapping[str, Mapping[str, Any]]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int | float):
        return f"{float(value):.{digits}f}"
    return str(value)


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, '< 0.001' below that (a bootstrap p is no finer than 1 / n_boot)."""
    if isinstance(value, int | float) and math.isfinite(value) and value < 0.001:
        return "< 0.001"
    return fmt(value, 3)


def with_ci(
    model: Mapping[str, Any], group: str, name: str, digits: int = 3, intervals: str | None = None
) -> str:
    """``point [low, high]``: ``model[group][name]``, interval from ``<group>_ci95`` or ``intervals``."""
    point = (model.get(group) or {}).get(name)
    interval = (model.get(intervals or f"{group}_ci95") or {}).get(name)
    if not interval or fmt(interval.get("low")) == "-":  # none, null (JSON) or NaN (in memory)
        return fmt(point, digits)
    return f"{fmt(point, digits)} [{fmt(interval['low'], digits)}, {fmt(interval['high'], digits)}]"


def _label(name: str, model: Mapping[str, Any]) -> str:
    return str(model.get("label", name))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)]


def cell_table(models: Models) -> list[str]:
    """Cell level at each scorer's operating threshold, patient-cluster intervals, McNemar vs the rule.

    External and audit reports name the cell metrics ``cells``/``cells_ci95``; metrics.json names
    them ``operating``/``ci95``.
    """
    rows = []
    for name, model in models.items():
        cells_key, ci_key = ("cells", "cells_ci95") if "cells" in model else ("operating", "ci95")
        versus = model.get("versus_rule") or {}
        mcnemar = "-"
        if versus:
            mcnemar = (
                f"{fmt(versus.get('mcnemar_model_only'), 0)} / {fmt(versus.get('mcnemar_rule_only'), 0)}, "
                f"p {fmt_p(versus.get('mcnemar_p'))}"
            )
        calibration = model.get("calibration") or {}
        rows.append(
            [
                _label(name, model),
                *(with_ci(model, cells_key, m, 3, ci_key) for m in ("auc", "sensitivity", "specificity")),
                fmt(calibration.get("brier")),
                mcnemar,
            ]
        )
    header = ["model", "AUC", "sensitivity", "specificity", "Brier", "right only / rule right only (McNemar)"]
    return _table(header, rows)


def patient_table(models: Models) -> list[str]:
    """Counting per patient: error, the paired difference to the rule, agreement with the truth."""
    rows = []
    for name, model in models.items():
        values = model.get("endpoints") or {}
        if not values:
            continue
        versus = model.get("versus_rule") or {}
        difference = "-"
        if versus:
            difference = (
                f"{fmt(versus.get('mae_difference'), 2)} [{fmt(versus.get('mae_difference_low'), 2)}, "
                f"{fmt(versus.get('mae_difference_high'), 2)}], p {fmt_p(versus.get('mae_difference_p'))}"
            )
        rows.append(
            [
                _label(name, model),
                with_ci(model, "endpoints", "mae", 2),
                difference,
                with_ci(model, "endpoints", "ccc", 2),
                f"{fmt(values.get('bias'), 2)} [{fmt(values.get('ba_low'), 1)}, "
                f"{fmt(values.get('ba_high'), 1)}]",
                with_ci(model, "endpoints", "pb_slope", 2),
                with_ci(model, "endpoints", "pb_intercept", 2),
                with_ci(model, "endpoints", "lob", 1),
                with_ci(model, "endpoints", "blank_positive_share", 2),
            ]
        )
    header = [
        "model", "MAE", "MAE - rule's (p)", "CCC", "bias [95 % LoA]", "Passing-Bablok slope",
        "intercept", "limit of blank", "CTC-free called positive",
    ]
    return _table(header, rows)


def cutoff_table(models: Models, cutoff: int) -> list[str]:
    """The call "count >= cutoff" per patient: sensitivity, specificity, PPV, NPV, Cohen's kappa."""
    rows = []
    prevalence = None
    for name, model in models.items():
        values = model.get("endpoints") or {}
        if not values:
            continue
        prevalence = values.get(f"prevalence_ge{cutoff}", prevalence)
        rows.append(
            [_label(name, model)]
            + [
                with_ci(model, "endpoints", f"{metric}_ge{cutoff}", 2)
                for metric in ("sensitivity", "specificity", "ppv", "npv", "kappa")
            ]
        )
    header = ["model", "sensitivity", "specificity", "PPV", "NPV", "kappa"]
    title = f"Call >= {cutoff} CTC per sample (prevalence {fmt(prevalence, 2)}):"
    return [title, "", *_table(header, rows)]


def review_table(models: Models) -> list[str]:
    """Detections in, candidates flagged for review out, per patient."""
    rows = []
    for name, model in models.items():
        review = model.get("review") or {}
        if not review.get("patients"):
            continue
        rows.append(
            [
                _label(name, model),
                fmt(review.get("detections_median"), 0),
                f"{fmt(review.get('flagged_median'), 0)} [{fmt(review.get('flagged_q1'), 0)}, "
                f"{fmt(review.get('flagged_q3'), 0)}]",
                fmt(review.get("flagged_max"), 0),
                fmt(review.get("flagged_share"), 3),
            ]
        )
    header = ["model", "detections per patient (median)", "flagged (median [IQR])", "flagged (max)",
              "share flagged"]
    return _table(header, rows)


def repeatability_table(models: Models) -> list[str]:
    """Counts of re-imaged specimens: the within-specimen SD (CLSI EP05 repeatability)."""
    rows = []
    for name, model in models.items():
        rep = model.get("repeatability") or {}
        if not rep:
            continue
        rows.append(
            [
                _label(name, model),
                f"{fmt(rep.get('sd'), 2)} [{fmt(rep.get('sd_low'), 2)}, {fmt(rep.get('sd_high'), 2)}]",
                fmt(rep.get("mean"), 2),
                fmt(rep.get("cv"), 2),
                f"{fmt(rep.get('n_specimens'), 0)} specimens, {fmt(rep.get('n_images'), 0)} images in all",
            ]
        )
    if not rows:
        return []
    return _table(["model", "repeatability SD [95 % CI]", "mean count", "CV", "re-imaged"], rows)


def endpoint_sections(models: Models, cutoffs: tuple[int, ...] = (1, 3, 5)) -> list[str]:
    """Every table above, with a line saying what each is, ready to join into a page."""
    lines = ["Cells (95 % intervals resample whole patients):", "", *cell_table(models), ""]
    lines += ["Counts per patient (95 % intervals resample patients):", "", *patient_table(models), ""]
    for cutoff in cutoffs:
        lines += [*cutoff_table(models, cutoff), ""]
    lines += ["Review burden:", "", *review_table(models), ""]
    repeat = repeatability_table(models)
    if repeat:
        lines += ["Repeatability (the same specimens imaged again, camera noise re-drawn):", "", *repeat, ""]
    return lines
