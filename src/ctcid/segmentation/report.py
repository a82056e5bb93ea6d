"""Segmentation metrics against ground truth, the overlay and crop-gallery pictures, and the
summary line ``ctcid segment`` prints.

Definitions (docs/segmentation.md): ground-truth metrics use only samples with an annotations.csv
and only fields that were not quarantined.

* detection recall: annotated non-debris cells matched by a detection / annotated non-debris cells;
* detection precision: detections matched to a non-debris cell / detections not matched to debris.
  A debris particle is real DAPI signal, so finding it is neither a hit nor a false alarm; how many
  there were is reported as ``detections_debris``;
* spot-count accuracy (exact, within +-1) and CD45 call accuracy: on detections matched to a
  non-debris cell; a ``dim`` leukocyte is CD45-positive;
* rule sensitivity / specificity: the rule label against the true label on all matched
  detections (debris counts as a true non-CTC, as it will for the classifier).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from ctcid.paths import SEGMENTATION_FILE
from ctcid.raw.composite import false_colour

if TYPE_CHECKING:  # the stage imports this module
    from ctcid.segmentation.stage import SegmentSummary

DEBRIS = "debris"
GALLERY_COLUMNS = 8
PER_SAMPLE_FILE = "segmentation_per_sample.csv"


def summary_line(summary: SegmentSummary) -> str:
    """What ``ctcid segment`` prints: cells, fields, quarantined, and the truth metrics when known."""
    metrics = summary.metrics
    line = f"{summary.n_cells} cells from {summary.n_fields} fields ({len(summary.quarantined)} quarantined)"
    if metrics.get("detection_recall") is not None:
        line += (
            f"; recall {metrics['detection_recall']:.3f}, precision {metrics['detection_precision']:.3f}, "
            f"spots exact {metrics['spot_count_exact']:.3f}"
        )
    return line


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _metrics(rows: pd.DataFrame, truth: pd.DataFrame, cd45_threshold: float) -> dict:
    matched = rows["matched"].to_numpy(dtype=bool)
    debris = (rows["true_cell_type"] == DEBRIS).fillna(False).to_numpy(dtype=bool)
    cell = matched & ~debris
    annotated = int((truth["cell_type"] != DEBRIS).sum())
    spots = rows["cep8_spots"].to_numpy()[cell].astype(int)
    true_spots = rows["true_cep8"].to_numpy()[cell].astype(int)
    cd45_call = rows["cd45_score"].to_numpy()[cell] >= cd45_threshold
    cd45_truth = (rows["true_cd45"][cell] != "negative").to_numpy(dtype=bool)
    rule = rows["rule_label"].to_numpy()[matched] == 1
    label = rows["true_label"].to_numpy()[matched] == 1
    return {
        "annotated_cells": annotated,
        "detections": len(rows),
        "detections_matched": int(cell.sum()),
        "detections_debris": int((matched & debris).sum()),
        "detections_unmatched": int((~matched).sum()),
        "detection_recall": _ratio(int(cell.sum()), annotated),
        "detection_precision": _ratio(int(cell.sum()), int(len(rows) - (matched & debris).sum())),
        "spot_count_exact": _ratio(int((spots == true_spots).sum()), int(cell.sum())),
        "spot_count_within_1": _ratio(int((np.abs(spots - true_spots) <= 1).sum()), int(cell.sum())),
        "cd45_call_accuracy": _ratio(int((cd45_call == cd45_truth).sum()), int(cell.sum())),
        "true_ctc": int(label.sum()),
        "rule_ctc": int(rule.sum()),
        "rule_sensitivity": _ratio(int((rule & label).sum()), int(label.sum())),
        "rule_specificity": _ratio(int((~rule & ~label).sum()), int((~label).sum())),
    }


def segmentation_metrics(
    manifest: pd.DataFrame,
    annotations: dict[str, pd.DataFrame],
    processed: set[tuple[str, str]],
    cd45_threshold: float,
) -> tuple[dict, pd.DataFrame]:
    """Overall metrics (flat dict, JSON-ready) and one row of the same metrics per annotated sample."""
    overall: dict = {"detections_total": len(manifest), "annotated_samples": len(annotations)}
    per_sample = []
    truths = []
    for sample, table in sorted(annotations.items()):
        fields = {field for s, field in processed if s == sample}
        truth = table[table["field"].astype(str).isin(fields)]
        rows = manifest[manifest["sample"] == sample]
        per_sample.append({"sample": sample, **_metrics(rows, truth, cd45_threshold)})
        truths.append(truth)
    if annotations:
        rows = manifest[manifest["sample"].isin(list(annotations))]
        overall.update(_metrics(rows, pd.concat(truths, ignore_index=True), cd45_threshold))
    return overall, pd.DataFrame(per_sample)


def write_reports(reports_dir: Path, metrics: dict, per_sample: pd.DataFrame) -> None:
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / SEGMENTATION_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    per_sample.to_csv(reports_dir / PER_SAMPLE_FILE, index=False)


def draw_overlay(
    path: Path,
    image: np.ndarray,
    channels: Sequence[str],
    contours: Sequence[np.ndarray],
    rule: np.ndarray,
    spot_rows: np.ndarray,
    spot_cols: np.ndarray,
    title: str,
    called: str = "rule CTC",
) -> None:
    """False-colour field with nuclear outlines (yellow: ``called``, white: not) and CEP8 spots (cyan)."""
    scale = 2  # thin outlines stay visible on a 512-pixel field
    rgb = false_colour(image, channels)
    rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for contour, is_ctc in zip(contours, rule, strict=True):
        colour = (255, 230, 0) if is_ctc else (235, 235, 235)
        cv2.drawContours(rgb, [contour * scale + scale // 2], -1, colour, 1 + int(is_ctc), cv2.LINE_AA)
    for row, col in zip(spot_rows, spot_cols, strict=True):
        cv2.circle(rgb, (int(col) * scale + 1, int(row) * scale + 1), 3, (0, 255, 255), 1, cv2.LINE_AA)
    banner = np.zeros((28, rgb.shape[1], 3), dtype=np.uint8)
    cv2.putText(banner, f"{title}  yellow: {called}  white: non-CTC  cyan: CEP8 spot", (6, 19),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([banner, rgb])[..., ::-1])


def gallery_classes(manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row indices per gallery row; against the truth when there is any, else by the rule alone."""
    rule = manifest["rule_label"].to_numpy() == 1
    if manifest["matched"].any():
        label = manifest["true_label"].fillna(-1).to_numpy()
        return {
            "true CTC": np.flatnonzero(label == 1),
            "rule false positive": np.flatnonzero(rule & (label == 0)),
            "rule false negative": np.flatnonzero(~rule & (label == 1)),
        }
    return {"rule CTC": np.flatnonzero(rule), "rule non-CTC": np.flatnonzero(~rule)}


def draw_crop_gallery(
    path: Path, manifest: pd.DataFrame, crops: Sequence[np.ndarray], channels: Sequence[str]
) -> None:
    """Example crops per class, one row each, on one shared contrast stretch (false colour).

    ``crops`` is anything indexed by manifest row: an array or the stage's in-memory parts.
    """
    from matplotlib.figure import Figure

    classes = gallery_classes(manifest)
    size_inches = (1.4 * GALLERY_COLUMNS, 1.7 * len(classes))
    fig = Figure(figsize=size_inches)
    axes = fig.subplots(len(classes), GALLERY_COLUMNS, squeeze=False)
    chosen = {name: rows[np.linspace(0, len(rows) - 1, min(len(rows), GALLERY_COLUMNS)).astype(int)]
              for name, rows in classes.items() if len(rows)}
    every = np.concatenate([r for r in chosen.values()]) if chosen else np.zeros(0, dtype=int)
    if len(every):
        # One montage so that all crops share the contrast stretch and stay comparable.
        montage = np.concatenate([crops[i] for i in every], axis=2)
        size = montage.shape[1]
        colour = false_colour(montage, channels)
    position = 0
    for row, (name, _) in enumerate(classes.items()):
        picked = chosen.get(name, np.zeros(0, dtype=int))
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(picked):
                cell = manifest.iloc[picked[col]]
                ax.imshow(colour[:, (position + col) * size : (position + col + 1) * size])
                ax.set_title(f"{cell['cep8_spots']} sp, CD45 {cell['cd45_score']:.1f}", fontsize=6)
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(f"{name}\n({len(classes[name])})", fontsize=7)
        axes[row][0].axis("on")
        position += len(picked)
    fig.suptitle("Crops by class (DAPI blue, CEP8 orange, CD45 red)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
