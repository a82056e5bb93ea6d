"""ctcid's nuclei and CEP8 spot counts against textbook peers, on a default and a hard simulated cohort.

    .venv/bin/python bench/bench_peers.py                                 # 30 samples per cohort
    .venv/bin/python bench/bench_peers.py --samples 6 --over /tmp/hard.yaml --work /tmp/peers
    .venv/bin/python bench/bench_peers.py --cohorts hard --log-threshold 3 --work /tmp/peers

Cohorts: "default" is --params as it is; "hard" is --params merged with the --over overlay
(ctcid.config.merge_overlay). Both simulate --samples samples with --seed (held out: not the seed
configs/hard.yaml's segment settings were chosen on). With --work the
simulated fields are kept under <work>/<cohort>/raw and reused by a later run with the same
simulator settings (a run with other settings simulates afresh); without --work a temporary folder
is used and removed.

Methods, all on the same fields (fields the segment stage quarantines are left out for every method):

* ctcid: the real segment stage (run_segment); its numbers come from the manifest it writes and are
  checked against its reports/segmentation.json.
* textbook nuclei (scikit-image, what a new user writes): DAPI -> filters.gaussian(sigma=2) ->
  threshold_otsu -> mask -> remove_small_objects (keeps area >= segment.min_area) -> distance
  transform -> peak_local_max(min_distance=5, one label per mask component) -> watershed(-distance,
  markers, mask) -> regionprops centroids. No area ceiling, no morphology, no other tuning.
* LoG spots: feature.blob_log(min_sigma=1, max_sigma=3, num_sigma=5) on CEP8 minus its median, in
  units of its robust noise (1.4826 x MAD), blobs counted per nucleus on ctcid's own label image
  grown by segment.spot_margin (as ctcid assigns its spots), so spot counting is compared on
  identical nuclei. The one threshold is calibrated once, on the default cohort (the grid value
  with the most exact counts there, so the default-cohort figure is in-sample) and applied
  unchanged to the hard cohort.

Metrics follow src/ctcid/segmentation/report.py: nucleus recall over annotated non-debris cells,
precision over detections not matched to debris (a found debris particle is neither hit nor false
alarm), spot counts exact / within 1 on detections matched to a non-debris cell. 95 % intervals:
percentile bootstrap over samples (patients; cells of one patient are not independent), the same
draws for every method so that differences are paired. A sample folder's optional artefacts.csv
(cell_id, artefacts = ';'-joined tags) adds a per-tag breakdown; untagged cells form "none".

Seconds are compute time summed over fields in this script's own loop (fields already in memory,
each field in one process): ctcid = segment_nuclei + detect_cep8_spots, textbook = its nuclei, LoG = its
spots at the chosen threshold. The whole segment stage's wall time is printed apart. Not a test:
timings depend on the machine and on whatever else it is doing.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import blob_log, peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from ctcid.config.loader import merge_overlay, parse_params, read_raw
from ctcid.config.params import Params
from ctcid.contracts import ANNOTATIONS_FILE, read_annotations
from ctcid.errors import FieldReadError
from ctcid.parallel import opencv_threads, parallel_map
from ctcid.raw.fields import FieldRef, iter_fields, read_field
from ctcid.segmentation.analysis import input_problem
from ctcid.segmentation.matching import match_centres
from ctcid.segmentation.nuclei import segment_nuclei
from ctcid.segmentation.report import DEBRIS
from ctcid.segmentation.spots import detect_cep8_spots, expand_labels, spots_per_nucleus
from ctcid.segmentation.stage import run_segment

COHORTS = ("default", "hard")
# configs/hard.yaml's segment settings were chosen on params.yaml's seed 42 (S0000-S0029)
HELD_OUT_SEED = 2027
TEXTBOOK_SIGMA = 2.0
TEXTBOOK_MIN_DISTANCE = 5
LOG_SIGMAS = {"min_sigma": 1, "max_sigma": 3, "num_sigma": 5}
# Thresholds on the scale-normalised LoG of the noise-unit image; a spot of peak A noise units
# answers about A / 2 at its own sigma, so the grid spans faint (~4 noise units) to bright spots.
LOG_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
ARTEFACTS_FILE = "artefacts.csv"
NO_TAG = "none"
METRICS = ("recall", "precision", "spot_exact", "spot_within_1")


# --- the peers ------------------------------------------------------------------------------------


def textbook_nuclei(dapi: np.ndarray, min_area: int) -> np.ndarray:
    """Nucleus centres (N x 2, x then y) by the scikit-image tutorial recipe, settings as documented."""
    smooth = gaussian(dapi, sigma=TEXTBOOK_SIGMA)
    mask = smooth > threshold_otsu(smooth)
    mask = remove_small_objects(mask, max_size=min_area - 1)  # keeps area >= min_area, as ctcid
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=TEXTBOOK_MIN_DISTANCE, labels=label(mask))
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    return np.array([(r.centroid[1], r.centroid[0]) for r in regionprops(labels)]).reshape(-1, 2)


def noise_units(cep8: np.ndarray) -> np.ndarray:
    """CEP8 minus its median, divided by the robust noise (cells cover a few % of a field)."""
    image = cep8.astype(np.float64)
    median = np.median(image)
    return (image - median) / max(1.4826 * np.median(np.abs(image - median)), 1e-6)


def log_counts(scaled: np.ndarray, owner: np.ndarray, n_nuclei: int, threshold: float) -> np.ndarray:
    """LoG blobs per nucleus (label i at index i - 1); blobs outside every grown nucleus are ignored."""
    blobs = blob_log(scaled, threshold=threshold, **LOG_SIGMAS).astype(int)
    owners = owner[blobs[:, 0], blobs[:, 1]]
    return np.bincount(owners, minlength=n_nuclei + 1)[1:]


# --- one field ------------------------------------------------------------------------------------


@dataclass
class FieldResult:
    sample: str
    field: str
    usable: bool
    ctcid_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    log_counts: np.ndarray = field(default_factory=lambda: np.zeros((len(LOG_GRID), 0), dtype=int))
    textbook_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    seconds: dict[str, float] = field(default_factory=dict)
    log_seconds: np.ndarray = field(default_factory=lambda: np.zeros(len(LOG_GRID)))


def analyse_field(ref: FieldRef, params: Params) -> FieldResult:
    """Every method on one field, each timed on the image in memory; unusable fields as the stage judges."""
    seg, channels = params.segment, list(params.channels)
    try:
        image = read_field(ref.path, len(channels))
    except FieldReadError:
        return FieldResult(ref.sample, ref.field, usable=False)
    if input_problem(image, seg, channels) is not None:
        return FieldResult(ref.sample, ref.field, usable=False)
    dapi, cep8 = image[channels.index("DAPI")], image[channels.index("CEP8")]

    clock = time.perf_counter()
    nuclei = segment_nuclei(dapi, seg)  # deterministic: the stage's own label image
    ctcid_nuclei = time.perf_counter() - clock
    clock = time.perf_counter()
    spots_per_nucleus(detect_cep8_spots(cep8, nuclei.labels, seg), len(nuclei.nuclei))
    ctcid_spots = time.perf_counter() - clock

    clock = time.perf_counter()
    textbook_xy = textbook_nuclei(dapi, seg.min_area)
    textbook = time.perf_counter() - clock

    clock = time.perf_counter()
    scaled = noise_units(cep8)
    owner = expand_labels(nuclei.labels, seg.spot_margin)
    log_setup = time.perf_counter() - clock
    counts, log_seconds = [], []
    for threshold in LOG_GRID:
        clock = time.perf_counter()
        counts.append(log_counts(scaled, owner, len(nuclei.nuclei), threshold))
        log_seconds.append(log_setup + time.perf_counter() - clock)

    return FieldResult(
        ref.sample,
        ref.field,
        usable=True,
        ctcid_xy=np.array([(n.x, n.y) for n in nuclei.nuclei]).reshape(-1, 2),
        log_counts=np.array(counts).reshape(len(LOG_GRID), -1),
        textbook_xy=textbook_xy,
        seconds={"ctcid_nuclei": ctcid_nuclei, "ctcid_spots": ctcid_spots, "textbook": textbook},
        log_seconds=np.array(log_seconds),
    )


# --- a cohort: simulate, run the stage, run the peers --------------------------------------------


def cohort_params(params_path: Path, overlay: Path | None, workers: int, seed: int | None = None) -> Params:
    raw = read_raw(params_path)
    if overlay is not None:
        raw = merge_overlay(raw, read_raw(overlay))
    raw = merge_overlay(raw, {"simulate": {"workers": workers}, "segment": {"workers": workers}})
    if seed is not None:
        raw["seed"] = seed
    return parse_params(raw, f"{params_path}" + (f" + {overlay}" if overlay else ""))


def simulated_raw(params: Params, root: Path, n_samples: int, workers: int) -> tuple[Path, float]:
    """``root/raw`` with n_samples simulated samples, reused when made with the same settings."""
    from ctcid.raw.simulate import simulate_dataset

    raw, stamp_path = root / "raw", root / "simulated.json"
    stamp = json.dumps(
        {
            "seed": params.seed,
            "samples": n_samples,
            "channels": list(params.channels),
            "simulate": params.simulate.model_dump(mode="json", exclude={"workers", "n_samples"}),
        },
        sort_keys=True,
    )
    has_fields = raw.is_dir() and any(True for _ in iter_fields(raw))
    if has_fields and (not stamp_path.exists() or stamp_path.read_text() == stamp):
        print(f"  reusing {raw}" + ("" if stamp_path.exists() else " (no simulated.json: not checked)"))
        return raw, 0.0
    shutil.rmtree(raw, ignore_errors=True)  # other settings: stale samples must not mix in
    clock = time.perf_counter()
    simulate_dataset(params, raw, n_samples=n_samples, workers=workers, show_progress=False)
    stamp_path.write_text(stamp)
    return raw, time.perf_counter() - clock


@dataclass
class CohortRun:
    name: str
    params: Params
    samples: list[str]
    truth: pd.DataFrame  # annotated objects of usable fields, with tags
    manifest: pd.DataFrame
    pipeline: dict  # reports/segmentation.json
    fields: list[FieldResult]
    seconds: dict[str, float]


def run_cohort(name: str, params: Params, root: Path, n_samples: int, workers: int) -> CohortRun:
    print(f"[{name}] simulating {n_samples} samples (seed {params.seed})")
    raw, simulate_s = simulated_raw(params, root, n_samples, workers)
    clock = time.perf_counter()
    run_segment(raw, root / "segment", root / "reports", params.segment, params.channels, show_progress=False)
    stage_s = time.perf_counter() - clock
    print(f"[{name}] segment stage {stage_s:.1f} s; peers on every field")
    with opencv_threads(1):  # as the stage: parallel across fields, OpenCV threads would contend
        fields = parallel_map(
            functools.partial(analyse_field, params=params), list(iter_fields(raw)), "peers", workers, False
        )
    usable = {(f.sample, f.field) for f in fields if f.usable}
    samples = sorted(p.name for p in raw.iterdir() if (p / ANNOTATIONS_FILE).is_file())
    truth = pd.concat([read_truth(raw / s) for s in samples], ignore_index=True)
    truth = truth[[key in usable for key in zip(truth["sample"], truth["field"], strict=True)]]
    run = CohortRun(
        name,
        params,
        samples,
        truth.reset_index(drop=True),
        pd.read_parquet(root / "segment" / "manifest.parquet"),
        json.loads((root / "reports" / "segmentation.json").read_text()),
        fields,
        {"simulate": simulate_s, "stage": stage_s},
    )
    check_same_nuclei(run)
    return run


def read_truth(sample_dir: Path) -> pd.DataFrame:
    """One sample's annotations with a ``tags`` tuple per cell from the optional artefacts.csv."""
    truth = read_annotations(sample_dir / ANNOTATIONS_FILE)
    truth = truth.assign(sample=sample_dir.name)
    tags: dict[str, tuple[str, ...]] = {}
    if (sample_dir / ARTEFACTS_FILE).is_file():
        table = pd.read_csv(sample_dir / ARTEFACTS_FILE, dtype=str).fillna("")
        tags = {row.cell_id: tuple(t for t in row.artefacts.split(";") if t) for row in table.itertuples()}
    return truth.assign(tags=[tags.get(cell, ()) for cell in truth["cell_id"]])


# --- scoring: per cell and per detection tables ---------------------------------------------------


def check_same_nuclei(run: CohortRun) -> None:
    """The re-run nuclei must be the stage's (same count, same centres), or LoG would count elsewhere."""
    for result in (f for f in run.fields if f.usable):
        rows = run.manifest[
            (run.manifest["sample"] == result.sample) & (run.manifest["field"] == result.field)
        ]
        stage_xy = rows[["x", "y"]].to_numpy(dtype=np.float64)
        if stage_xy.shape != result.ctcid_xy.shape or not np.allclose(stage_xy, result.ctcid_xy, atol=1e-3):
            raise RuntimeError(
                f"{result.sample}/{result.field}: re-run nuclei differ from the stage's manifest"
            )


def ctcid_detections(run: CohortRun, log_index: int | None) -> pd.DataFrame:
    """The manifest's detections: sample, cell (matched non-debris), debris, spots, true_cep8, log_spots."""
    m = run.manifest
    debris = (m["true_cell_type"] == DEBRIS).fillna(False).to_numpy(dtype=bool)
    matched = m["matched"].to_numpy(dtype=bool)
    log = -1
    if log_index is not None:  # fields and manifest rows are both in (sample, field, cell_idx) order
        log = np.concatenate([f.log_counts[log_index] for f in run.fields if f.usable])
    return pd.DataFrame(
        {
            "sample": m["sample"].astype(str).to_numpy(),
            "cell_id": m["true_cell_id"].astype(object).to_numpy(),
            "cell": matched & ~debris,
            "debris": matched & debris,
            "spots": m["cep8_spots"].to_numpy(dtype=int),
            "true_cep8": m["true_cep8"].fillna(-99).to_numpy(dtype=int),
            "log_spots": log,
        }
    )


def textbook_detections(run: CohortRun) -> pd.DataFrame:
    """Textbook detections matched to the field's annotated objects exactly as the stage matches."""
    parts = []
    by_field = dict(iter(run.truth.groupby(["sample", "field"])))
    for result in (f for f in run.fields if f.usable):
        truth = by_field.get((result.sample, result.field), run.truth.iloc[:0])
        hit = match_centres(
            result.textbook_xy, truth[["x", "y"]].to_numpy(), run.params.segment.match_max_distance
        )
        picked = truth.iloc[hit[hit >= 0]]
        cell_type = np.full(len(hit), "", dtype=object)
        cell_type[hit >= 0] = picked["cell_type"].to_numpy()
        cell_id = np.full(len(hit), None, dtype=object)
        cell_id[hit >= 0] = picked["cell_id"].to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "sample": result.sample,
                    "cell_id": cell_id,
                    "cell": (hit >= 0) & (cell_type != DEBRIS),
                    "debris": cell_type == DEBRIS,
                }
            )
        )
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["sample", "cell_id", "cell", "debris"])
    )


def cell_table(run: CohortRun, ctcid: pd.DataFrame, textbook: pd.DataFrame) -> pd.DataFrame:
    """Annotated non-debris cells of usable fields: found by each method, spot counts where ctcid matched."""
    cells = run.truth[run.truth["cell_type"] != DEBRIS][["sample", "cell_id", "cep8_copies", "tags"]]
    hits = ctcid[ctcid["cell"]].set_index(["sample", "cell_id"])[["spots", "log_spots"]]
    cells = cells.join(hits, on=["sample", "cell_id"])
    hit = textbook[textbook["cell"]]
    found_by_textbook = set(zip(hit["sample"], hit["cell_id"], strict=True))
    return cells.assign(
        ctcid_found=cells["spots"].notna(),
        textbook_found=[
            key in found_by_textbook for key in zip(cells["sample"], cells["cell_id"], strict=True)
        ],
    )


# --- proportions with bootstrap intervals over samples --------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Successes and trials per sample (in CohortRun.samples order)."""

    k: np.ndarray
    n: np.ndarray

    @classmethod
    def of(cls, sample: pd.Series, success: np.ndarray, samples: list[str]) -> Tally:
        frame = pd.DataFrame({"sample": sample.to_numpy(), "k": np.asarray(success, dtype=int)})
        sums = frame.groupby("sample")["k"].agg(["sum", "count"]).reindex(samples, fill_value=0)
        return cls(sums["sum"].to_numpy(), sums["count"].to_numpy())

    def value(self) -> float | None:
        return float(self.k.sum() / self.n.sum()) if self.n.sum() else None

    def draws(self, weights: np.ndarray) -> np.ndarray:
        """The proportion in each bootstrap draw (weights: draws x samples, how often each was drawn)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ self.k) / (weights @ self.n)


def summary(value: float | None, draws: np.ndarray, extra: dict | None = None) -> dict:
    if value is None or np.all(np.isnan(draws)):
        return {"value": value, "low": None, "high": None, **(extra or {})}
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return {
        "value": round(value, 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
        **(extra or {}),
    }


def proportion(tally: Tally, weights: np.ndarray) -> dict:
    extra = {"successes": int(tally.k.sum()), "trials": int(tally.n.sum())}
    return summary(tally.value(), tally.draws(weights), extra)


def difference(peer: Tally, ctcid: Tally, weights: np.ndarray) -> dict:
    """Peer minus ctcid, paired: both from the same resampled patients."""
    if peer.value() is None or ctcid.value() is None:
        return summary(None, np.full(1, np.nan))
    return summary(peer.value() - ctcid.value(), peer.draws(weights) - ctcid.draws(weights))


def spot_tallies(cells: pd.DataFrame, column: str, samples: list[str]) -> dict[str, Tally]:
    scored = cells[cells["ctcid_found"]]
    error = np.abs(scored[column].to_numpy(dtype=int) - scored["cep8_copies"].to_numpy(dtype=int))
    return {
        "spot_exact": Tally.of(scored["sample"], error == 0, samples),
        "spot_within_1": Tally.of(scored["sample"], error <= 1, samples),
    }


def nucleus_tallies(cells: pd.DataFrame, detections: pd.DataFrame, found: str, samples: list[str]) -> dict:
    counted = detections[~detections["debris"]]
    return {
        "recall": Tally.of(cells["sample"], cells[found], samples),
        "precision": Tally.of(counted["sample"], counted["cell"], samples),
    }


def method_tallies(
    cells: pd.DataFrame, ctcid: pd.DataFrame, textbook: pd.DataFrame, samples: list[str]
) -> dict:
    return {
        "ctcid": {
            **nucleus_tallies(cells, ctcid, "ctcid_found", samples),
            **spot_tallies(cells, "spots", samples),
        },
        "textbook": nucleus_tallies(cells, textbook, "textbook_found", samples),
        "log": spot_tallies(cells, "log_spots", samples),
    }


def check_against_pipeline(tallies: dict, pipeline: dict) -> None:
    """ctcid's figures here must be the stage's own (segmentation.json rounds to 4 places)."""
    keys = {
        "recall": "detection_recall",
        "precision": "detection_precision",
        "spot_exact": "spot_count_exact",
        "spot_within_1": "spot_count_within_1",
    }
    for metric, key in keys.items():
        mine, theirs = tallies["ctcid"][metric].value(), pipeline.get(key)
        if (mine is None) != (theirs is None) or (mine is not None and abs(round(mine, 4) - theirs) > 1e-9):
            raise RuntimeError(f"ctcid {metric}: {mine} here, {theirs} in segmentation.json")


def artefact_rows(cells: pd.DataFrame, samples: list[str], weights: np.ndarray) -> list[dict]:
    """Per artefact tag (a cell may carry several): recall of both nucleus finders, exact counts of both."""
    tags = sorted({t for ts in cells["tags"] for t in ts})
    rows = []
    for tag in [*tags, NO_TAG]:
        chosen = cells[[(tag in ts) if tag != NO_TAG else not ts for ts in cells["tags"]]]
        spots = {
            m: spot_tallies(chosen, c, samples)["spot_exact"]
            for m, c in (("ctcid", "spots"), ("log", "log_spots"))
        }
        rows.append(
            {
                "artefact": tag,
                "cells": len(chosen),
                "ctcid_recall": proportion(
                    Tally.of(chosen["sample"], chosen["ctcid_found"], samples), weights
                ),
                "textbook_recall": proportion(
                    Tally.of(chosen["sample"], chosen["textbook_found"], samples), weights
                ),
                "ctcid_spot_exact": proportion(spots["ctcid"], weights),
                "log_spot_exact": proportion(spots["log"], weights),
            }
        )
    return rows


# --- the LoG threshold ----------------------------------------------------------------------------


def grid_exactness(run: CohortRun) -> list[float]:
    """Exact LoG spot counts on ctcid's matched cells, for every threshold of the grid."""
    cell = ctcid_detections(run, None)
    keep = cell["cell"].to_numpy()
    truth = cell.loc[keep, "true_cep8"].to_numpy()
    counts = np.concatenate([f.log_counts for f in run.fields if f.usable], axis=1)[:, keep]
    return [float(np.mean(row == truth)) if keep.any() else 0.0 for row in counts]


# --- report ---------------------------------------------------------------------------------------


def pct(entry: dict | None) -> str:
    if not entry or entry["value"] is None:
        return "—"
    if entry["low"] is None:
        return f"{100 * entry['value']:.1f} %"
    return f"{100 * entry['value']:.1f} % [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def points(entry: dict) -> str:
    if entry["value"] is None:
        return "—"
    return f"{100 * entry['value']:+.1f} pp [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"


def score_cohort(run: CohortRun, log_index: int, draws: int, seed: int) -> dict:
    ctcid, textbook = ctcid_detections(run, log_index), textbook_detections(run)
    cells = cell_table(run, ctcid, textbook)
    tallies = method_tallies(cells, ctcid, textbook, run.samples)
    check_against_pipeline(tallies, run.pipeline)
    n = len(run.samples)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=draws)
    usable = [f for f in run.fields if f.usable]
    seconds = {
        "ctcid": sum(f.seconds["ctcid_nuclei"] + f.seconds["ctcid_spots"] for f in usable),
        "ctcid_nuclei": sum(f.seconds["ctcid_nuclei"] for f in usable),
        "ctcid_spots": sum(f.seconds["ctcid_spots"] for f in usable),
        "textbook": sum(f.seconds["textbook"] for f in usable),
        "log": float(sum(f.log_seconds[log_index] for f in usable)),
        **run.seconds,
    }
    return {
        "samples": n,
        "fields": len(usable),
        "fields_left_out": len(run.fields) - len(usable),
        "annotated_cells": len(cells),
        "spot_scored_cells": int(cells["ctcid_found"].sum()),
        "detections": {"ctcid": len(ctcid), "textbook": len(textbook)},
        "metrics": {m: {k: proportion(t, weights) for k, t in ts.items()} for m, ts in tallies.items()},
        "minus_ctcid": {
            peer: {k: difference(t, tallies["ctcid"][k], weights) for k, t in tallies[peer].items()}
            for peer in ("textbook", "log")
        },
        "artefacts": artefact_rows(cells, run.samples, weights),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "pipeline_segmentation": run.pipeline,
    }


def print_report(results: dict, threshold: float) -> None:
    columns = (
        "cohort",
        "method",
        "nuclei recall",
        "nuclei precision",
        "spot exact",
        "spot within 1",
        "cells",
    )
    print("\n| " + " | ".join(columns) + " | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"ctcid": "ctcid", "textbook": "textbook nuclei (skimage)", "log": f"LoG spots (t={threshold:g})"}
    for cohort, r in results.items():
        for method, name in names.items():
            m = r["metrics"][method]
            cells = (
                f"{r['annotated_cells'] if 'recall' in m else '—'} / "
                f"{r['spot_scored_cells'] if 'spot_exact' in m else '—'}"
            )
            print(
                f"| {cohort} | {name} | {pct(m.get('recall'))} | {pct(m.get('precision'))} | "
                f"{pct(m.get('spot_exact'))} | {pct(m.get('spot_within_1'))} | {cells} | "
                f"{r['seconds'][method]:.2f} |"
            )
    print(
        "cells: annotated non-debris cells (recall) / cells matched by ctcid (spot counts); "
        "LoG counts on ctcid's nuclei;\nseconds: compute summed over fields, ctcid = nuclei + spots, "
        "textbook = nuclei, LoG = spots\n"
    )

    print(
        "| cohort | artefact | cells | ctcid recall | textbook recall | ctcid spot exact | LoG spot exact |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cohort, r in results.items():
        for row in r["artefacts"]:
            print(
                f"| {cohort} | {row['artefact']} | {row['cells']} | {pct(row['ctcid_recall'])} | "
                f"{pct(row['textbook_recall'])} | {pct(row['ctcid_spot_exact'])} | "
                f"{pct(row['log_spot_exact'])} |"
            )

    print("\npeer minus ctcid (percentage points, paired bootstrap over samples):")
    for cohort, r in results.items():
        for peer, diffs in r["minus_ctcid"].items():
            text = ", ".join(f"{k} {points(v)}" for k, v in diffs.items())
            print(f"  {cohort:<8} {peer:<9} {text}")

    print("\ncompute time, summed over fields (one process per field):")
    for cohort, r in results.items():
        s, d = r["seconds"], r["detections"]
        parts = (
            ("ctcid nuclei", s["ctcid_nuclei"], d["ctcid"]),
            ("textbook nuclei", s["textbook"], d["textbook"]),
            ("ctcid spots", s["ctcid_spots"], d["ctcid"]),
            ("LoG spots", s["log"], d["ctcid"]),
        )
        for name, sec, n in parts:
            print(f"  {cohort:<8} {name:<16} {sec:7.2f} s  {n / sec if sec else 0:8.0f} cells/s")
        print(
            f"  {cohort:<8} textbook / ctcid nuclei time {s['textbook'] / s['ctcid_nuclei']:.2f}x, "
            f"LoG / ctcid spots time {s['log'] / s['ctcid_spots']:.2f}x; segment stage (wall, all of it) "
            f"{s['stage']:.1f} s = {d['ctcid'] / s['stage']:.0f} cells/s; simulate {s['simulate']:.1f} s"
        )


# --- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="base params file, the default cohort as it is (default: params.yaml)",
    )
    parser.add_argument(
        "--over",
        type=Path,
        default=Path("configs/hard.yaml"),
        help="overlay merged key by key onto --params for the hard cohort (default: configs/hard.yaml)",
    )
    parser.add_argument(
        "--cohorts",
        nargs="+",
        choices=COHORTS,
        default=list(COHORTS),
        help="cohorts to run (default: both); hard alone needs --log-threshold",
    )
    parser.add_argument(
        "--samples", type=int, default=30, help="simulated samples (patients) per cohort (default: 30)"
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for <cohort>/raw, segment and reports; kept, and its simulated fields reused "
        "when made with the same settings (default: a temporary folder, removed)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes for simulate, the segment stage and the peers; 0 = one per core (default: 2)",
    )
    parser.add_argument(
        "--log-threshold",
        type=float,
        help=f"LoG threshold, one of {LOG_GRID}, instead of the one calibrated on the default cohort",
    )
    parser.add_argument(
        "--draws", type=int, default=1000, help="bootstrap draws over samples (default: 1000)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=HELD_OUT_SEED,
        help=f"simulator seed of both cohorts (default: {HELD_OUT_SEED}, not params.yaml's 42: "
        "configs/hard.yaml's segment settings were chosen on seed 42's S0000-S0029)",
    )
    parser.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap draws (default: 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/bench_peers.json"),
        help="JSON with every figure (default: reports/bench_peers.json)",
    )
    args = parser.parse_args()
    if "hard" in args.cohorts and not args.over.is_file():
        parser.error(
            f"--over {args.over}: no such file (the hard cohort's overlay); pass one or --cohorts default"
        )
    if "default" not in args.cohorts and args.log_threshold is None:
        parser.error(
            "the LoG threshold is calibrated on the default cohort: run it too or give --log-threshold"
        )
    if args.log_threshold is not None and args.log_threshold not in LOG_GRID:
        parser.error(f"--log-threshold must be one of the grid {LOG_GRID} (all are computed in one pass)")
    return args


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_peers_"))
    try:
        runs = {
            name: run_cohort(
                name,
                cohort_params(args.params, args.over if name == "hard" else None, args.workers, args.seed),
                work / name,
                args.samples,
                args.workers,
            )
            for name in args.cohorts
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    grids = {name: grid_exactness(run) for name, run in runs.items()}
    if args.log_threshold is None:
        log_index = int(np.argmax(grids["default"]))  # first of any ties: the lowest threshold
    else:
        log_index = LOG_GRID.index(args.log_threshold)
    threshold = LOG_GRID[log_index]
    print("\nLoG threshold grid, exact spot counts on ctcid's matched cells:")
    for name, grid in grids.items():
        print(
            f"  {name:<8} "
            + "  ".join(f"{t:g}: {100 * e:.1f} %" for t, e in zip(LOG_GRID, grid, strict=True))
        )
    how = "given" if args.log_threshold is not None else "calibrated on default"
    print(f"  chosen threshold {threshold:g} ({how}), applied unchanged to every cohort")

    results = {name: score_cohort(run, log_index, args.draws, args.boot_seed) for name, run in runs.items()}
    print_report(results, threshold)
    report = {
        "settings": {
            "params": str(args.params),
            "over": str(args.over) if "hard" in runs else None,
            "samples": args.samples,
            "seed": {n: r.params.seed for n, r in runs.items()},
            "draws": args.draws,
            "boot_seed": args.boot_seed,
            "workers": args.workers,
            "textbook": {"gaussian_sigma": TEXTBOOK_SIGMA, "peak_min_distance": TEXTBOOK_MIN_DISTANCE},
            "log": {
                **LOG_SIGMAS,
                "grid": list(LOG_GRID),
                "threshold": threshold,
                "threshold_source": how,
                "grid_exact": {n: [round(e, 4) for e in g] for n, g in grids.items()},
            },
        },
        "cohorts": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
