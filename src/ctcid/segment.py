"""The segment step: nuclei in DAPI, then per-cell features, crops, manifest and metrics.

Nucleus detection is the paper's OpenCV recipe plus the splitting of touching nuclei
(docs/segmentation.md explains each choice):

1. Gaussian denoise of DAPI;
2. gradient-guided threshold: the intensity a nucleus's edge sits at is where the gradient
   magnitude peaks, so the threshold is the gradient-weighted mean intensity of the field between
   background and nuclei (see :func:`nuclear_threshold`); a floor in background-noise units keeps
   empty fields empty;
3. morphological close then open, outer contours filled (holes gone), small blobs dropped;
4. touching nuclei split at their contact line, seeded by distance-transform peaks whose
   inscribed circles do not overlap much (see :func:`split_touching`);
5. one :class:`Nucleus` per region in the area range: label, centre, bounding box, contour.

Then :func:`analyse_field` measures every nucleus (features, CEP8 spots, CD45, the rule, crop)
and :func:`run_segment` runs the stage over all raw fields.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from ctcid.config import Params, SegmentParams
from ctcid.crops import cut_crops, write_crops
from ctcid.errors import CtcidError, FieldReadError, GateFailed
from ctcid.features import cd45_ring_score, dapi_features, rule_label, shape_features
from ctcid.fields import FieldRef, iter_fields, read_field
from ctcid.matching import match_centres
from ctcid.parallel import parallel_map
from ctcid.quarantine import QuarantineEntry, write_quarantine
from ctcid.segment_report import draw_crop_gallery, draw_overlay, segmentation_metrics, write_reports
from ctcid.spots import Spots, detect_cep8_spots, spots_per_nucleus

STAGE = "segment"
BOX = ("x0", "y0", "x1", "y1")
ANNOTATION_COLUMNS = ("field", "cell_id", "x", "y", "cell_type", "label", "cep8_copies", "cd45_status")
STRING = pd.StringDtype()


@dataclass(frozen=True)
class Nucleus:
    """One detected nucleus; ``label`` is its value in the field's label image (cell_idx + 1)."""

    label: int
    x: float
    y: float
    x0: int
    y0: int
    x1: int
    y1: int
    contour: np.ndarray  # OpenCV contour in field coordinates


@dataclass(frozen=True)
class NucleiResult:
    labels: np.ndarray  # int32 H x W, 0 background, i + 1 for nuclei[i]
    nuclei: list[Nucleus]
    background: float  # DAPI background level (median of the denoised field)
    noise: float  # robust standard deviation of the denoised background


def robust_background(image: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation; cells cover a small share of a field."""
    sample = image[::2, ::2] if image.size > 65536 else image
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    return median, max(1.4826 * mad, 1e-3)


def denoise(dapi: np.ndarray, params: SegmentParams) -> np.ndarray:
    k = params.gaussian_ksize
    return cv2.GaussianBlur(dapi.astype(np.float32), (k, k), 0)


def nuclear_threshold(smooth: np.ndarray, background: float, noise: float, params: SegmentParams) -> float:
    """Gradient-weighted mean intensity, floored at ``threshold_min_snr`` noise units above background.

    Weighting each pixel's intensity by its squared gradient magnitude averages the intensities at
    which edges occur; for blurred bright objects on a dark background that is about half-way
    between background and the object plateau, whatever the exposure. Only pixels above the floor
    count, so the flat noisy background (weak gradients, but many of them) does not pull it down.
    """
    floor = background + params.threshold_min_snr * noise
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    weight = gx * gx + gy * gy
    weight[smooth < floor] = 0.0
    total = float(weight.sum())
    if total <= 0.0:
        return floor
    edge_level = float((weight * smooth).sum() / total)
    return max(floor, background + params.threshold_scale * (edge_level - background))


def foreground_mask(smooth: np.ndarray, threshold: float, params: SegmentParams) -> np.ndarray:
    """Binary nuclear mask (uint8 0/1): threshold, close, open, filled outer contours in the area range."""
    binary = (smooth > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.morph_ksize, params.morph_ksize))
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel, iterations=params.morph_iterations)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel, iterations=params.morph_iterations)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Touching nuclei form one blob, so only the lower bound is applied before splitting.
    kept = [c for c in contours if cv2.contourArea(c) >= params.min_area]
    mask = np.zeros_like(binary)
    cv2.drawContours(mask, kept, -1, 1, thickness=cv2.FILLED)
    return mask


def _distance_peaks(distance: np.ndarray, params: SegmentParams) -> list[tuple[float, float, float]]:
    """Plateaus of local distance maxima as (row, col, height), higher than the smallest nucleus radius."""
    size = 2 * int(round(params.watershed_min_distance)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    is_peak = (distance >= cv2.dilate(distance, kernel)) & (distance >= params.min_peak_radius)
    n, plateau = cv2.connectedComponents(is_peak.astype(np.uint8), connectivity=8)
    peaks = []
    for index in range(1, n):
        rows, cols = np.nonzero(plateau == index)
        peaks.append((float(rows.mean()), float(cols.mean()), float(distance[rows, cols].max())))
    return peaks


def _group_peaks(peaks: list[tuple[float, float, float]], min_separation: float) -> np.ndarray:
    """Group ids of peaks: two peaks are one nucleus when their inscribed circles overlap a lot.

    Peaks ``a`` and ``b`` (heights = inscribed radii) join when their centre distance is below
    ``min_separation`` x (r_a + r_b). Touching nuclei sit at about the sum of their radii; the
    several distance peaks of one irregular or elongated nucleus lie well inside each other's
    inscribed circle.
    """
    group = list(range(len(peaks)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, (ra, ca, ha) in enumerate(peaks):
        for j in range(i + 1, len(peaks)):
            rb, cb, hb = peaks[j]
            if np.hypot(ra - rb, ca - cb) < min_separation * (ha + hb):
                group[root(j)] = root(i)
    roots = [root(i) for i in range(len(peaks))]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots])


def split_touching(mask: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Label image of the mask with touching nuclei split (int32, 0 background, arbitrary order).

    Seeds are the peaks of each blob's distance transform, one per round nucleus, grouped when
    they belong to one nucleus (:func:`_group_peaks`). Pixels then go to the seed whose inscribed
    circle (centre = peak, radius = peak height) has the nearest edge: an additively weighted
    Voronoi partition, which is where a watershed of the distance transform would cut two
    overlapping discs, on their contact line, also when their sizes differ. (Both library
    floodings were tried: ``cv2.watershed`` floods by neighbour differences, which are flat on a
    distance map, and cut through the larger nucleus; ``scipy.ndimage.watershed_ift`` let one
    seed take the whole blob.)
    """
    n, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    labels = components.astype(np.int32)
    if not params.split_touching:
        return labels
    next_label = n
    for index in range(1, n):
        x, y, w, h = stats[index, :4]
        if stats[index, cv2.CC_STAT_AREA] < 2 * params.min_area:
            continue
        # Zero margin so that the distance transform sees the field border as the blob's edge too.
        window = np.pad(components[y : y + h, x : x + w] == index, 1)
        # scipy's exact EDT, not cv2.distanceTransform(DIST_MASK_PRECISE): OpenCV's result on small
        # windows varied in the last bit from call to call (first call of a process differed), which
        # flipped ties between distance peaks and made segmentation differ from run to run.
        distance = ndimage.distance_transform_edt(window).astype(np.float32)
        peaks = _distance_peaks(distance, params)
        if len(peaks) < 2:
            continue
        groups = _group_peaks(peaks, params.split_min_separation)
        if groups.max() == 0:
            continue
        rows, cols = np.nonzero(window)
        seeds = np.asarray(peaks)
        gap = np.hypot(rows[:, None] - seeds[:, 0], cols[:, None] - seeds[:, 1]) - seeds[:, 2]
        owner = groups[np.argmin(gap, axis=1)]
        region = labels[y : y + h, x : x + w]
        for group in range(1, groups.max() + 1):
            part = owner == group
            region[rows[part] - 1, cols[part] - 1] = next_label
            next_label += 1
    return labels


def segment_nuclei(dapi: np.ndarray, params: SegmentParams) -> NucleiResult:
    """Detect nuclei in one DAPI image; nuclei come in raster order of their centres."""
    smooth = denoise(dapi, params)
    background, noise = robust_background(smooth)
    threshold = nuclear_threshold(smooth, background, noise, params)
    mask = foreground_mask(smooth, threshold, params)
    raw_labels = split_touching(mask, params)

    found = []
    for index, region in enumerate(ndimage.find_objects(raw_labels), start=1):
        if region is None:
            continue
        inside = raw_labels[region] == index
        rows, cols = np.nonzero(inside)
        if params.min_area <= rows.size <= params.max_area:
            found.append((rows.mean() + region[0].start, cols.mean() + region[1].start, region, inside))
    found.sort(key=lambda item: (round(item[0]), item[1]))

    labels = np.zeros(dapi.shape, dtype=np.int32)
    nuclei: list[Nucleus] = []
    for label, (row, col, region, inside) in enumerate(found, start=1):
        labels[region][inside] = label
        contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        offset = np.array([region[1].start, region[0].start], dtype=np.int32)
        contour = max(contours, key=cv2.contourArea).astype(np.int32) + offset
        nuclei.append(
            Nucleus(
                label=label, x=float(col), y=float(row),
                x0=region[1].start, y0=region[0].start, x1=region[1].stop, y1=region[0].stop,
                contour=contour,
            )
        )
    return NucleiResult(labels=labels, nuclei=nuclei, background=background, noise=noise)


# --- one field: nuclei, features, spots, CD45, rule, crops ---------------------------------------


@dataclass(frozen=True)
class FieldAnalysis:
    """Everything found in one field; ``table`` has one row per nucleus in ``nuclei`` order."""

    nuclei: NucleiResult
    spots: Spots
    table: pd.DataFrame
    crops: np.ndarray


def analyse_field(image: np.ndarray, params: Params) -> FieldAnalysis:
    """Segment a C x H x W field and measure every nucleus (manifest columns without ids and truth)."""
    seg = params.segment
    dapi = image[params.channel_index("DAPI")]
    result = segment_nuclei(dapi, seg)
    n = len(result.nuclei)
    spots = detect_cep8_spots(image[params.channel_index("CEP8")], result.labels, seg)
    cep8 = spots_per_nucleus(spots, n)
    centres = np.array([(c.x, c.y) for c in result.nuclei], dtype=np.float64).reshape(-1, 2)
    cd45 = cd45_ring_score(image[params.channel_index("CD45")], result.labels, centres, seg)
    table = pd.DataFrame(
        {
            "cell_idx": np.arange(n, dtype=np.int32),
            "x": np.array([c.x for c in result.nuclei], dtype=np.float32),
            "y": np.array([c.y for c in result.nuclei], dtype=np.float32),
            **{k: np.array([getattr(c, k) for c in result.nuclei], dtype=np.int32) for k in BOX},
            "field_height": np.full(n, image.shape[1], dtype=np.int32),
            "field_width": np.full(n, image.shape[2], dtype=np.int32),
            **shape_features([c.contour for c in result.nuclei], result.labels),
            **dapi_features(dapi, result.labels, n, result.background),
            "cd45_score": cd45,
            "cep8_spots": cep8,
            "rule_label": rule_label(cd45, cep8, seg),
        }
    )
    crops = cut_crops(image, [(c.x, c.y) for c in result.nuclei], seg.crop_size)
    return FieldAnalysis(nuclei=result, spots=spots, table=table, crops=crops)



def input_problem(image: np.ndarray, params: Params) -> tuple[str, str] | None:
    """(reason, hint) when a readable field is still unusable: DAPI dark or a channel saturated."""
    seg = params.segment
    dapi = image[params.channel_index("DAPI")]
    low, high = np.percentile(dapi[::2, ::2], [0.1, 99.9])
    if high - low < seg.dark_min_range:
        return (
            f"DAPI channel is dark: 0.1-99.9 percentile range {high - low:.0f} counts "
            f"< segment.dark_min_range {seg.dark_min_range:g}",
            "Check lamp, filter and exposure; re-image the field",
        )
    full = np.iinfo(np.uint16).max
    for index, name in enumerate(params.channels):
        share = float(np.count_nonzero(image[index] == full)) / image[index].size
        if share > seg.max_saturated_share:
            return (
                f"{name} channel saturated: {share:.1%} of pixels at {full} "
                f"> segment.max_saturated_share {seg.max_saturated_share:.1%}",
                "Shorten the exposure or lower the gain so that stained cells stay below full scale",
            )
    return None


@dataclass(frozen=True)
class FieldOutcome:
    ref: FieldRef
    table: pd.DataFrame | None  # None when quarantined
    crops: np.ndarray | None
    problem: QuarantineEntry | None


def process_field(ref: FieldRef, params: Params) -> FieldOutcome:
    """Read, check and analyse one field; bad input comes back as a quarantine entry, not an error."""
    cv2.setNumThreads(1)  # parallelism is across fields; OpenCV threads would only contend
    try:
        image = read_field(ref.path, len(params.channels))
    except FieldReadError as error:
        return FieldOutcome(ref, None, None, QuarantineEntry(str(ref.path), STAGE, error.reason, error.hint))
    problem = input_problem(image, params)
    if problem is not None:
        return FieldOutcome(ref, None, None, QuarantineEntry(str(ref.path), STAGE, *problem))
    analysis = analyse_field(image, params)
    return FieldOutcome(ref, analysis.table, analysis.crops, None)


# --- the stage -----------------------------------------------------------------------------------


def read_annotations(path: Path) -> pd.DataFrame:
    """One sample's annotations.csv, checked for the columns the matching needs."""
    try:
        table = pd.read_csv(path, dtype={"field": str, "cell_id": str, "cluster_id": str})
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: cannot read annotations ({error})") from None
    missing = [c for c in ANNOTATION_COLUMNS if c not in table.columns]
    if missing:
        raise CtcidError(f"{path}: annotations lack column(s) {', '.join(missing)}; see docs/architecture.md")
    return table


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
        true_label=column("label", pd.Int8Dtype(), lambda v: int(v == "CTC")),
    )


# The manifest contract of docs/architecture.md, in column order.
MANIFEST_SCHEMA: dict[str, object] = {
    "cell_uid": STRING, "sample": STRING, "field": STRING, "cell_idx": np.int32, "crop_index": np.int64,
    "x": np.float32, "y": np.float32, "x0": np.int32, "y0": np.int32, "x1": np.int32, "y1": np.int32,
    "field_height": np.int32, "field_width": np.int32,
    "area": np.float32, "perimeter": np.float32, "circularity": np.float32, "solidity": np.float32,
    "dapi_mean": np.float32, "dapi_integrated": np.float32, "cd45_score": np.float32,
    "cep8_spots": np.int16, "rule_label": np.int8, "matched": bool,
    "true_cell_id": STRING, "true_cell_type": STRING, "true_cd45": STRING,
    "true_cep8": pd.Int16Dtype(), "true_label": pd.Int8Dtype(),
}


@dataclass(frozen=True)
class SegmentSummary:
    n_fields: int
    n_cells: int
    quarantined: list[QuarantineEntry]
    metrics: dict


def run_segment(raw_dir: Path, out_dir: Path, reports_dir: Path, params: Params, show_progress: bool = True
                ) -> SegmentSummary:
    """The ``segment`` stage: every raw field -> crops.npy, manifest.parquet and reports.

    Unusable fields go to ``reports/quarantine.csv``; the stage fails (GateFailed, after writing
    that list) only when their share exceeds ``segment.quarantine_max_share``.
    """
    raw_dir, out_dir, reports_dir = Path(raw_dir), Path(out_dir), Path(reports_dir)
    if not raw_dir.is_dir():
        raise CtcidError(f"{raw_dir}: raw data folder not found; run 'ctcid simulate --out {raw_dir}' first")
    refs = list(iter_fields(raw_dir))
    if not refs:
        raise CtcidError(f"{raw_dir}: no <sample>/<field>.tif files found")
    seg = params.segment
    outcomes = parallel_map(
        functools.partial(process_field, params=params), refs, "segment fields", seg.workers, show_progress
    )
    outcomes.sort(key=lambda o: (o.ref.sample, o.ref.field))
    quarantined = [o.problem for o in outcomes if o.problem is not None]
    write_quarantine(reports_dir / "quarantine.csv", quarantined)
    share = len(quarantined) / len(outcomes)
    if share > seg.quarantine_max_share:
        raise GateFailed(
            f"{len(quarantined)} of {len(outcomes)} fields ({share:.1%}) quarantined, more than "
            f"segment.quarantine_max_share {seg.quarantine_max_share:.1%}; "
            f"see {reports_dir / 'quarantine.csv'}"
        )

    annotations = {
        sample: read_annotations(raw_dir / sample / "annotations.csv")
        for sample in sorted({o.ref.sample for o in outcomes})
        if (raw_dir / sample / "annotations.csv").is_file()
    }
    good = [o for o in outcomes if o.table is not None]
    parts = []
    for outcome in good:
        truth = annotations.get(outcome.ref.sample)
        field_truth = truth[truth["field"] == outcome.ref.field] if truth is not None else None
        table = attach_truth(outcome.table, field_truth, seg.match_max_distance)
        parts.append(table.assign(sample=outcome.ref.sample, field=outcome.ref.field))
    manifest = build_manifest(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_crops(out_dir / "crops.npy", [o.crops for o in good], len(params.channels), seg.crop_size)
    manifest.to_parquet(out_dir / "manifest.parquet", index=False)

    processed = {(o.ref.sample, o.ref.field) for o in good}
    metrics, per_sample = segmentation_metrics(manifest, annotations, processed, seg.cd45_threshold)
    metrics.update(
        fields=len(outcomes),
        fields_quarantined=len(quarantined),
        fields_empty=sum(1 for o in good if o.table is not None and o.table.empty),
    )
    write_reports(reports_dir, metrics, per_sample)
    if good:
        overlay_field(reports_dir / "segmentation_overlay.png", manifest, good, params)
    crops = np.load(out_dir / "crops.npy", mmap_mode="r")
    draw_crop_gallery(reports_dir / "crop_gallery.png", manifest, crops, params.channels)
    return SegmentSummary(len(outcomes), len(manifest), quarantined, metrics)


def overlay_field(path: Path, manifest: pd.DataFrame, good: list[FieldOutcome], params: Params) -> None:
    """Draw the field with the most rule and true CTCs (the first such field on ties)."""
    calls = manifest.groupby(["sample", "field"], sort=False)[["rule_label", "true_label"]].sum()
    score = {key: int(row.sum()) for key, row in calls.iterrows()}
    best = max(good, key=lambda o: score.get((o.ref.sample, o.ref.field), -1))
    image = read_field(best.ref.path, len(params.channels))
    analysis = analyse_field(image, params)
    draw_overlay(
        path, image, params.channels, [c.contour for c in analysis.nuclei.nuclei],
        analysis.table["rule_label"].to_numpy(), analysis.spots.rows, analysis.spots.cols,
        f"{best.ref.sample}/{best.ref.field}",
    )


def build_manifest(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-field tables (already in sample, field, cell_idx order); add ids; fix dtypes."""
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in MANIFEST_SCHEMA.items()})
    manifest = pd.concat(parts, ignore_index=True)
    ids = manifest["cell_idx"].astype(str)
    manifest["cell_uid"] = manifest["sample"] + "/" + manifest["field"] + "/" + ids
    manifest["crop_index"] = np.arange(len(manifest), dtype=np.int64)
    return manifest.loc[:, list(MANIFEST_SCHEMA)].astype(MANIFEST_SCHEMA)
