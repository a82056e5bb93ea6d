"""Throughput of the segment stage against the bare OpenCV floor, measured in one run.

    .venv/bin/python bench/bench_segment.py                 # simulate 20 default fields
    .venv/bin/python bench/bench_segment.py --raw /tmp/sim_default --fields 40

Prints cells per second of ``run_segment`` (one worker: the whole stage, reports included) and of
the per-field analysis alone, and each one's time as a multiple of the floor: read + Gaussian blur
+ Otsu threshold + contours on DAPI, the least any OpenCV nucleus finder does on the same fields.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.raw.fields import iter_fields, read_field
from ctcid.segmentation.analysis import analyse_field
from ctcid.segmentation.stage import run_segment


def simulated_fields(root: Path, n_fields: int, seed: int) -> Path:
    from ctcid.raw.simulate import simulate_dataset

    params = parse_params({"seed": seed, "simulate": {"fields_per_sample": [1, 1]}})
    simulate_dataset(params, root, n_samples=n_fields, workers=1, show_progress=False)
    return root


def opencv_floor(paths: list[Path], params: Params) -> int:
    """The bare minimum: read, blur, Otsu threshold and outer contours of DAPI; returns contour count."""
    k = params.segment.gaussian_ksize
    found = 0
    for path in paths:
        dapi = read_field(path, len(params.channels))[params.channel_index("DAPI")]
        smooth = cv2.GaussianBlur(dapi, (k, k), 0)
        scaled = cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        _, binary = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        found += len(contours)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path, help="raw folder <sample>/<field>.tif (default: simulate)")
    parser.add_argument("--fields", type=int, default=20, help="number of fields to time")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    try:
        if args.raw is None:
            raw = simulated_fields(work / "raw", args.fields, args.seed)
        else:
            raw = work / "raw"
            for ref in list(iter_fields(args.raw))[: args.fields]:
                (raw / ref.sample).mkdir(parents=True, exist_ok=True)
                shutil.copy(ref.path, raw / ref.sample / ref.path.name)
        paths = [ref.path for ref in iter_fields(raw)]
        params = parse_params({"segment": {"workers": 1}})

        start = time.perf_counter()
        floor_blobs = opencv_floor(paths, params)
        floor = time.perf_counter() - start

        start = time.perf_counter()
        cells = sum(len(analyse_field(read_field(p), params.segment, params.channels).table) for p in paths)
        analysis = time.perf_counter() - start

        start = time.perf_counter()
        summary = run_segment(
            raw, work / "segment", work / "reports", params.segment, params.channels, show_progress=False
        )
        stage = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{len(paths)} fields, {cells} nuclei (floor finds {floor_blobs} blobs), one process")
    for name, seconds, n in (("opencv floor", floor, cells), ("analyse_field", analysis, cells),
                             ("run_segment", stage, summary.n_cells)):
        print(f"{name:<15} {seconds:7.2f} s  {n / seconds:8.0f} cells/s  {seconds / floor:5.2f}x floor")


if __name__ == "__main__":
    main()
