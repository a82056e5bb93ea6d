"""Evaluation figures (PNG) and the CSV files that ``dvc plots`` renders.

Figures are built with matplotlib's object API (``Figure``, no pyplot), which renders PNGs with
Agg whatever backend the caller has chosen: no display is needed and importing this module
changes no global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ctcid.metrics import BinaryMetrics, Calibration, PatientCounts, auc_score, bland_altman


def _target(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = _target(path)
    fig.savefig(path)
    return path


def _roc_points(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    # sklearn marks the (0, 0) corner with threshold +inf; write the next float above the top
    # score instead so that the CSV stays numeric for dvc plots.
    thresholds = np.where(np.isinf(thresholds), np.nextafter(y_score.max(), np.inf), thresholds)
    return fpr, tpr, thresholds


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "ROC",
    points: Mapping[str, BinaryMetrics] | None = None,
) -> Path:
    """One ROC curve per named (y_true, y_score) pair, AUC in the legend; curves need both classes.

    ``points`` are classifiers that only call (the rule): a 0/1 score has no curve and no AUC worth
    the name, so each is one marker at its sensitivity and specificity.
    """
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    for name, (y_true, y_score) in curves.items():
        fpr, tpr, _ = _roc_points(y_true, y_score)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc_score(y_true, y_score):.3f})")
    for name, call in (points or {}).items():
        label = f"{name} (sens {call.sensitivity:.3f}, spec {call.specificity:.3f})"
        ax.plot([1.0 - call.specificity], [call.sensitivity], "kD", ms=6, label=label)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_confusion(metrics: BinaryMetrics, path: str | Path, title: str) -> Path:
    matrix = np.array([[metrics.tn, metrics.fp], [metrics.fn, metrics.tp]])
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    names = ["non-CTC", "CTC"]
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=colour)
    ax.text(
        0.5,
        -0.28,
        f"sens {metrics.sensitivity:.3f}  spec {metrics.specificity:.3f}  threshold {metrics.threshold:.3g}",
        transform=ax.transAxes,
        ha="center",
        fontsize="small",
    )
    return _save(fig, path)


def plot_patient_counts(counts: PatientCounts, path: str | Path, title: str = "CTCs per patient") -> Path:
    """Predicted against true count per patient on log1p axes (counts span 0 to hundreds)."""
    true = np.log1p(counts.table["true_count"].to_numpy(dtype=np.float64))
    pred = np.log1p(counts.table["predicted_count"].to_numpy(dtype=np.float64))
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    ax.scatter(true, pred, s=18, alpha=0.7)
    top = max(float(true.max(initial=0.0)), float(pred.max(initial=0.0)), np.log1p(10.0)) * 1.05
    ax.plot([0, top], [0, top], ls="--", lw=0.8, color="grey")
    ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if np.log1p(t) <= top]
    ax.set(
        xlim=(-0.1, top),
        ylim=(-0.1, top),
        xticks=np.log1p(ticks),
        yticks=np.log1p(ticks),
        xticklabels=ticks,
        yticklabels=ticks,
        xlabel="true CTC count",
        ylabel="predicted CTC count",
        title=f"{title} (MAE {counts.mae:.2f}, n={counts.n_patients})",
    )
    return _save(fig, path)


def plot_bland_altman(counts: PatientCounts, path: str | Path, title: str = "Bland-Altman") -> Path:
    """Count error (predicted - true) against the mean of both counts, one point per patient.

    Lines mark the bias and the 95 % limits of agreement; the dashed grey line is no error.
    """
    true = counts.table["true_count"].to_numpy(dtype=np.float64)
    pred = counts.table["predicted_count"].to_numpy(dtype=np.float64)
    agreement = bland_altman(true, pred)
    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    ax.scatter((true + pred) / 2.0, pred - true, s=18, alpha=0.7)
    ax.axhline(0.0, ls="--", lw=0.8, color="grey")
    lines = (
        ("bias", agreement.bias, "-"),
        ("-1.96 SD", agreement.lower, ":"),
        ("+1.96 SD", agreement.upper, ":"),
    )
    for name, value, style in lines:
        if np.isfinite(value):  # a single patient has no limits: draw nothing rather than NaN
            ax.axhline(value, ls=style, lw=1.2, color="tab:red")
            # x in axes units, y in data units: the label sits at the right end of its line
            ax.text(
                1.0,
                value,
                f"{name} {value:+.2f} ",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize="small",
                color="tab:red",
            )
    ax.margins(y=0.12)  # room above the top limit for its label
    ax.set(
        xlabel="mean of true and predicted CTC count",
        ylabel="predicted - true CTC count",
        title=f"{title} (bias {agreement.bias:+.2f}, n={agreement.n})",
    )
    return _save(fig, path)


def plot_predictive_values(
    curves: Mapping[str, pd.DataFrame], cutoff: int, path: str | Path, title: str
) -> Path:
    """PPV and NPV of the call "count >= cutoff" across the prevalence of such patients.

    ``curves`` hold :func:`ctcid.clinical.prevalence_curve` tables (columns prevalence, ppv, npv and
    their ``_low``/``_high`` bands, one ``cutoff`` each); the shaded bands are the 95 % intervals
    from the patient bootstrap of sensitivity and specificity.
    """
    fig = Figure(figsize=(9, 4), dpi=100)
    axes = fig.subplots(1, 2, sharex=True)
    for name, table in curves.items():
        rows = table[table["cutoff"] == cutoff] if "cutoff" in table else table
        x = rows["prevalence"].to_numpy(dtype=np.float64)
        for ax, value in zip(axes, ("ppv", "npv"), strict=True):
            (line,) = ax.plot(x, rows[value].to_numpy(dtype=np.float64), lw=1.4, label=name)
            low, high = rows.get(f"{value}_low"), rows.get(f"{value}_high")
            if low is not None and high is not None:
                ax.fill_between(x, low.to_numpy(dtype=np.float64), high.to_numpy(dtype=np.float64),
                                color=line.get_color(), alpha=0.15, lw=0)
    for ax, value in zip(axes, ("PPV", "NPV"), strict=True):
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=f"prevalence of patients with >= {cutoff} CTC",
               ylabel=value)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def plot_review_burden(tables: Mapping[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """Candidates flagged for review per patient, one box per scorer, detections in the labels.

    ``tables`` hold per-patient ``detections`` and ``flagged``
    (:func:`ctcid.evaluation.endpoints.patient_table`).
    """
    names = list(tables)
    fig = Figure(figsize=(max(5.0, 1.1 * len(names) + 2), 4), dpi=100)
    ax = fig.subplots()
    data = [tables[n]["flagged"].to_numpy(dtype=np.float64) for n in names]
    if names:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize="small")
    first = tables[names[0]] if names else None
    median_detections = float(np.median(first["detections"])) if first is not None and len(first) else 0.0
    ax.set(ylabel="candidates flagged for review per patient",
           title=f"{title} (median {median_detections:.0f} detections per patient)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_reliability(curves: Mapping[str, Calibration], path: str | Path, title: str = "Reliability") -> Path:
    """Observed CTC share against mean score per bin, Brier score in the legend; cells per bin below.

    The lower panel counts cells on a log scale: most scores pile up near 0 and 1, and a bin of a
    handful of cells makes a point that looks as sure as one of thousands.
    """
    fig = Figure(figsize=(5, 6.5), dpi=100)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    for name, curve in curves.items():
        bins = curve.bins
        (line,) = ax.plot(
            bins["mean_predicted"],
            bins["observed"],
            marker="o",
            ms=4,
            lw=1.5,
            clip_on=False,  # bins at 0 and 1 sit on the frame: keep their markers whole
            label=f"{name} (Brier {curve.brier:.3f})",
        )
        width = (bins["bin_high"] - bins["bin_low"]).to_numpy()
        hist.bar(bins["bin_low"], bins["count"], width=width, align="edge", alpha=0.4, color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed CTC share", title=title)
    if curves:
        ax.legend(loc="upper left", fontsize="small")
    if any(len(c.bins) for c in curves.values()):
        hist.set_yscale("log")
    hist.set(xlim=(0, 1), xlabel="mean score in bin", ylabel="cells")
    return _save(fig, path)


def plot_drift_scores(scores: np.ndarray, threshold: float, path: str | Path, title: str) -> Path:
    """Field drift scores against the flag threshold, on a log axis (a shifted site lies decades out)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    if finite.size:
        bins = np.geomspace(max(finite.min(), 0.1), max(finite.max(), threshold) * 1.1, 30)
        ax.hist(finite, bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
    ax.axvline(threshold, color="tab:red", ls="--", label=f"flag threshold {threshold:.2f}")
    ax.set(
        xlabel="drift score (Mahalanobis distance to the training fields)",
        ylabel="fields",
        title=f"{title}: {int((finite > threshold).sum())} of {scores.size} fields flagged",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_roc_csv(y_true, y_score, path: str | Path) -> Path:
    """Columns fpr, tpr, threshold: input of a ``dvc plots`` linear/simple template."""
    fpr, tpr, thresholds = _roc_points(y_true, y_score)
    path = _target(path)
    pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds}).to_csv(path, index=False)
    return path


def write_confusion_csv(y_true, y_pred, path: str | Path) -> Path:
    """Columns actual, predicted, one row per cell: input of the ``dvc plots`` confusion template."""
    names = np.array(["non-CTC", "CTC"])
    path = _target(path)
    pd.DataFrame(
        {
            "actual": names[np.asarray(y_true).astype(np.int64)],
            "predicted": names[np.asarray(y_pred).astype(np.int64)],
        }
    ).to_csv(path, index=False)
    return path
