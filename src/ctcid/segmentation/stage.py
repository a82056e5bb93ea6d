"""The segment stage: every raw field -> ``crops.npy``, ``manifest.parquet`` and the reports.

Fields are analysed in worker processes (:func:`ctcid.segmentation.analysis.process_field`,
which also estimates each field's intensity levels from its crops); detections are then matched
to the annotated cells of their sample, when there are any, given their sample's site from the
optional ``<raw>/sites.csv``, and written in (sample, field, cell) order so the outputs are
byte-identical whatever the number of workers (docs/reproducibility.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.config.segment import SegmentParams
from ctcid.config.simulate import SimulateConfig, SimulateParams
from ctcid.config.stage import StageConfig
from ctcid.contracts import (
    ANNOTATIONS_FILE,
    CTC_LABEL,
    MANIFEST_SCHEMA,
    STRING,
    empty_manifest,
    read_annotations,
)
from ctcid.errors import CtcidError, GateFailed
from ctcid.parallel import opencv_threads, parallel_map
from ctcid.paths import CROPS_NAME, MANIFEST_NAME, QUARANTINE_NAME
from ctcid.quarantine import QuarantineEntry, write_quarantine
from ctcid.raw.fields import iter_fields, read_field
from ctcid.raw.provenance import raw_state
from ctcid.raw.sites import read_sites, site_of
from ctcid.segmentation.analysis import FieldOutcome, process_field
from ctcid.segmentation.crops import CropParts, write_crops
from ctcid.segmentation.matching import match_centres
from ctcid.segmentation.report import draw_crop_gallery, draw_overlay, segmentation_metrics, write_reports


@dataclass(frozen=True)
class SegmentSummary:
    n_fields: int
    n_cells: int
    quarantined: list[QuarantineEntry]
    metrics: dict


class SegmentConfig(StageConfig):
    """What the segment stage reads: its section, the channel order, and the simulator's settings
    that simulated raw data must have been drawn with (checked, never used to segment)."""

    seed: int
    channels: list[str]
    simulate: SimulateParams
    segment: SegmentParams


def segment_stage(
    raw_dir: Path, out_dir: Path, reports_dir: Path, params: SegmentConfig, show_progress: bool = True
) -> SegmentSummary:
    """The ``segment`` stage: :func:`run_segment`, once simulated raw data is known to follow params.yaml.

    Raw data ``ctcid simulate`` drew with other settings than today's ``seed`` and ``simulate.*``
    (the README's hard-cohort recipe after a default run) fails here, with what differs, instead
    of being segmented as if it were the cohort params.yaml describes.
    """
    params = SegmentConfig.project(params)  # only its keys, whatever the caller holds
    simulation = SimulateConfig.project(params)  # the seed, channels and simulate.* it holds
    state = raw_state(Path(raw_dir), simulation)
    if state.state in ("stale", "mixed"):
        raise CtcidError(state.message(Path(raw_dir)))
    return run_segment(raw_dir, out_dir, reports_dir, params.segment, params.channels, show_progress)


def run_segment(
    raw_dir: Path,
    out_dir: Path,
    reports_dir: Path,
    seg: SegmentParams,
    channels: Sequence[str],
    show_progress: bool = True,
) -> SegmentSummary:
    """The ``segment`` stage: every raw field -> crops.npy, manifest.parquet and reports.

    Unusable fields go to ``reports/quarantine.csv``; the stage fails (GateFailed, after writing
    that list) only when their share exceeds ``segment.quarantine_max_share``.
    """
    raw_dir, out_dir, reports_dir = Path(raw_dir), Path(out_dir), Path(reports_dir)
    sites = read_sites(raw_dir)  # once, and before any field: a bad sites.csv fails fast
    outcomes = _analyse_fields(raw_dir, seg, channels, show_progress)
    quarantined = [o.problem for o in outcomes if o.problem is not None]
    write_quarantine(reports_dir / QUARANTINE_NAME, quarantined)
    share = len(quarantined) / len(outcomes)
    if share > seg.quarantine_max_share:
        raise GateFailed(
            f"{len(quarantined)} of {len(outcomes)} fields ({share:.1%}) quarantined, more than "
            f"segment.quarantine_max_share {seg.quarantine_max_share:.1%}; "
            f"see {reports_dir / QUARANTINE_NAME}"
        )

    annotations = {
        sample: read_annotations(raw_dir / sample / ANNOTATIONS_FILE)
        for sample in sorted({o.ref.sample for o in outcomes})
        if (raw_dir / sample / ANNOTATIONS_FILE).is_file()
    }
    good = [o for o in outcomes if o.table is not None]
    manifest = build_manifest([_with_truth(o, annotations, sites, seg.match_max_distance) for o in good])
    crops = CropParts([o.crops for o in good])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_crops(out_dir / CROPS_NAME, crops.parts, len(channels), seg.crop_size)
    manifest.to_parquet(out_dir / MANIFEST_NAME, index=False)

    processed = {(o.ref.sample, o.ref.field) for o in good}
    metrics, per_sample = segmentation_metrics(manifest, annotations, processed, seg.cd45_threshold)
    metrics.update(
        fields=len(outcomes),
        fields_quarantined=len(quarantined),
        fields_empty=sum(1 for o in good if o.table is not None and o.table.empty),
    )
    write_reports(reports_dir, metrics, per_sample)
    if good:
        overlay_field(reports_dir / "segmentation_overlay.png", manifest, good, channels)
    draw_crop_gallery(reports_dir / "crop_gallery.png", manifest, crops, channels)
    return SegmentSummary(len(outcomes), len(manifest), quarantined, metrics)


def _analyse_fields(
    raw_dir: Path, seg: SegmentParams, channels: Sequence[str], show_progress: bool
) -> list[FieldOutcome]:
    if not raw_dir.is_dir():
        raise CtcidError(f"{raw_dir}: raw data folder not found; run 'ctcid simulate --out {raw_dir}' first")
    refs = list(iter_fields(raw_dir))
    if not refs:
        raise CtcidError(f"{raw_dir}: no <sample>/<field>.tif files found")
    task = functools.partial(process_field, seg=seg, channels=tuple(channels))
    # parallelism is across fields; OpenCV's own threads would only contend (forked workers inherit this)
    with opencv_threads(1):
        outcomes = parallel_map(task, refs, "segment fields", seg.workers, show_progress)
    return sorted(outcomes, key=lambda o: (o.ref.sample, o.ref.field))


def _with_truth(
    outcome: FieldOutcome, annotations: dict[str, pd.DataFrame], sites: dict[str, str], max_distance: float
) -> pd.DataFrame:
    assert outcome.table is not None
    truth = annotations.get(outcome.ref.sample)
    field_truth = truth[truth["field"] == outcome.ref.field] if truth is not None else None
    table = attach_truth(outcome.table, field_truth, max_distance)
    sample = outcome.ref.sample
    return table.assign(sample=sample, site=site_of(sites, sample), field=outcome.ref.field)


def attach_truth(table: pd.DataFrame, truth: pd.DataFrame | None, max_distance: float) -> pd.DataFrame:
    """Fill ``matched`` and ``true_*`` of one field's rows from its annotated cells (may be None)."""
    n = len(table)
    assignment = np.full(n, -1)
    if truth is not None and len(truth):
        assignment = match_centres(table[["x", "y"]].to_numpy(), truth[["x", "y"]].to_numpy(), max_distance)
    hit = assignment >= 0
    picked = truth.iloc[assignment[hit]] if truth is not None else None

    def column(source: str, dtype: object, convert=lambda v: v) -> pd.Series:
        out = pd.Series(pd.NA, index=table.index, dtype=dtype)
        if picked is not None and hit.any():
            out[hit] = [convert(v) for v in picked[source]]
        return out

    return table.assign(
        matched=hit,
        true_cell_id=column("cell_id", STRING, str),
        true_cell_type=column("cell_type", STRING, str),
        true_cd45=column("cd45_status", STRING, str),
        true_cep8=column("cep8_copies", pd.Int16Dtype(), int),
        true_label=column("label", pd.Int8Dtype(), lambda v: int(v == CTC_LABEL)),
    )


def build_manifest(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-field tables (already in sample, field, cell_idx order); add ids; fix dtypes."""
    if not parts:
        return empty_manifest()
    manifest = pd.concat(parts, ignore_index=True)
    ids = manifest["cell_idx"].astype(str)
    manifest["cell_uid"] = manifest["sample"] + "/" + manifest["field"] + "/" + ids
    manifest["crop_index"] = np.arange(len(manifest), dtype=np.int64)
    return manifest.loc[:, list(MANIFEST_SCHEMA)].astype(MANIFEST_SCHEMA)


def overlay_field(
    path: Path, manifest: pd.DataFrame, good: list[FieldOutcome], channels: Sequence[str]
) -> None:
    """Draw the field with the most rule and true CTCs (the first such field on ties).

    The outlines come from the analysis the stage just ran; only the pixels are read again.
    """
    calls = manifest.groupby(["sample", "field"], sort=False)[["rule_label", "true_label"]].sum()
    score = {key: int(row.sum()) for key, row in calls.iterrows()}
    best = max(good, key=lambda o: score.get((o.ref.sample, o.ref.field), -1))
    assert best.outline is not None
    outline = best.outline
    draw_overlay(
        path, read_field(best.ref.path, len(channels)), channels, outline.contours, outline.rule,
        outline.spot_rows, outline.spot_cols, f"{best.ref.sample}/{best.ref.field}",
    )
