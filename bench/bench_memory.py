"""Peak resident memory of the train and tune stages' data path against the cohort's size.

For each ``--copies`` k: a cohort of k copies of the pipeline's crops.npy and manifest (written to a
temporary folder; cell ids and crop rows renumbered), then, in a fresh process per stage and size:

* **train**: the train stage's loader (``load_labelled_crops`` of the split's training rows, field
  levels, CD45 facts), **tune**: the tune stage's (``TrialData.at``);
* the channel normalisation of the training crops, a ResNet18 at ``--input-size`` (224, the
  paper's), ``--batches`` batches of one training epoch with augmentation and the site shift on,
  and scoring ``--batches`` batches.

Each process reports its peak RSS (``ru_maxrss``: everything resident, pages of the memory-mapped
crops.npy included) and its peak anonymous RSS (sampled every 5 ms from /proc: the memory the
process itself holds, which the kernel cannot drop and re-read). The script prints both per size, a
least-squares slope per 1,000 training crops, and what holding every training crop as float32 at
the input size would take. Usage (after ``dvc repro split``)::

    .venv/bin/python bench/bench_memory.py [--copies 1 2 4 8] [--input-size 224] [--batches 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ctcid.paths import CROPS_NAME, MANIFEST_NAME

SEGMENT = Path("data/segment")
SPLIT = Path("data/split/split.json")
STAGES = ("train", "tune")


def replicate(folder: Path, copies: int) -> Path:
    """crops.npy and manifest.parquet of ``copies`` copies of the pipeline's, and a split over them."""
    from ctcid.split import read_split

    crops = np.load(SEGMENT / CROPS_NAME, mmap_mode="r")
    manifest = pd.read_parquet(SEGMENT / MANIFEST_NAME)
    shape = (copies * len(crops), *crops.shape[1:])
    out = np.lib.format.open_memmap(folder / CROPS_NAME, "w+", crops.dtype, shape)
    parts = []
    for k in range(copies):
        out[k * len(crops) : (k + 1) * len(crops)] = crops
        part = manifest.copy()
        part["crop_index"] = part["crop_index"] + k * len(crops)
        part["cell_uid"] = part["cell_uid"].astype(str) + f"/copy{k}"
        parts.append(part)
    out.flush()
    del out
    pd.concat(parts, ignore_index=True).to_parquet(folder / MANIFEST_NAME)
    train = read_split(SPLIT).train
    rows = np.concatenate([train + k * len(crops) for k in range(copies)])
    np.save(folder / "train_rows.npy", rows)
    return folder


def child(folder: Path, stage: str, input_size: int, batches: int) -> dict[str, float]:
    """One stage's data path on the cohort in ``folder``; its peak RSS and peak anonymous RSS, MiB."""
    import torch

    from ctcid.config.params import Params
    from ctcid.config.train import SiteShift, TrainParams
    from ctcid.contracts import read_manifest
    from ctcid.model.backbones import build_classifier
    from ctcid.model.dataset import input_levels, load_labelled_crops
    from ctcid.model.trainer import FitOptions, fit, seed_everything

    peak_anon = _AnonPeak()
    torch.set_num_threads(2)
    params = Params()
    manifest = read_manifest(folder / MANIFEST_NAME)
    rows = np.load(folder / "train_rows.npy")
    levels = input_levels(manifest, params.channels, True)
    threshold = params.segment.cd45_threshold
    if stage == "train":
        crops = folder / CROPS_NAME
        data = load_labelled_crops(crops, manifest, rows, "truth", input_size, levels, threshold)
    else:
        from ctcid.tuning.objective import TrialData

        split = SimpleNamespace(train=rows, label_source="truth")  # what TrialData reads of a split
        data = TrialData(folder / CROPS_NAME, manifest, split, levels, threshold).at(input_size)  # type: ignore[arg-type]
    normalisation = _normalisation(data)
    seed_everything(0)
    model = build_classifier("resnet18", normalisation, input_size=input_size)
    config = TrainParams(
        input_size=input_size, batch_size=64, epochs=1, standardise=True, site_shift=SiteShift(prob=0.8)
    )
    options = FitOptions.from_params(config, seed=0, channels=params.channels)
    few = data.take(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: 64 * batches])
    fit(model, few, None, options, device=torch.device("cpu"), show_progress=False)
    _score(model, few)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"crops": len(data), "peak_rss_mib": peak, "peak_anon_mib": peak_anon.stop()}


def _normalisation(data):  # noqa: ANN001, ANN202
    """The stage's normalisation: streamed where ctcid streams it (``fit_normalisation``), else in memory."""
    from ctcid.model import dataset

    streamed = getattr(dataset, "fit_normalisation", None)
    return streamed(data) if streamed is not None else dataset.Normalisation.fit(data.images)


def _score(model, data) -> None:  # noqa: ANN001
    from ctcid.model import trainer

    batched = getattr(trainer, "score", None)
    if batched is not None:
        batched(model, data, 64)
    else:
        trainer.predict_scores(model, data.images, 64)


class _AnonPeak:
    """The largest RssAnon of this process, sampled every 5 ms on a thread."""

    def __init__(self) -> None:
        self.peak, self._running = 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, _rss_anon_kib())
            time.sleep(0.005)

    def stop(self) -> float:
        self._running = False
        self._thread.join()
        return max(self.peak, _rss_anon_kib()) / 1024


def _rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def slope_per_thousand(crops: list[int], mib: list[float]) -> float:
    """MiB per 1,000 training crops, least squares."""
    if len(crops) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(crops) / 1000.0, np.asarray(mib), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=3, help="training and scoring batches of 64")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.input_size, args.batches)))
        return
    results: dict[str, list[dict[str, float]]] = {stage: [] for stage in args.stages}
    for copies in args.copies:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            folder = replicate(Path(tmp), copies)
            for stage in args.stages:
                command = [sys.executable, __file__, "--child", str(folder), stage,
                           "--input-size", str(args.input_size), "--batches", str(args.batches)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                result = json.loads(done.stdout.strip().splitlines()[-1]) | {"copies": copies}
                results[stage].append(result)
                print(
                    f"{stage:<5} {copies}x: {int(result['crops']):>7} training crops, peak RSS "
                    f"{result['peak_rss_mib']:8.0f} MiB, peak anonymous {result['peak_anon_mib']:8.0f} MiB",
                    flush=True,
                )
    per_crop = int(np.prod((3, args.input_size, args.input_size))) * 4 / 2**20
    for stage, rows in results.items():
        crops = [int(r["crops"]) for r in rows]
        print(
            f"{stage}: slope {slope_per_thousand(crops, [r['peak_rss_mib'] for r in rows]):.1f} MiB RSS, "
            f"{slope_per_thousand(crops, [r['peak_anon_mib'] for r in rows]):.1f} MiB anonymous per 1,000 "
            f"crops; every crop held as float32 at {args.input_size} px would be {1000 * per_crop:.0f} MiB "
            "per 1,000"
        )


if __name__ == "__main__":
    main()
