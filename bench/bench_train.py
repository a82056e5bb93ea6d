"""Training throughput of each backbone through ctcid's data path and trainer, against bare PyTorch.

For every backbone, in one run and on one machine:

* ``ctcid``: ``trainer.fit`` for one epoch on crops left in the memory-mapped crops.npy: each
  batch read, resized and augmented as it is drawn (``dataset.CropBatches``), shuffling, loss
  bookkeeping, callbacks;
* ``bare``: the same model, batch size and optimiser in a minimal loop over batches resized and
  sliced in memory beforehand (forward, cross-entropy, backward, AdamW step), timed before and
  after the ctcid run so that drift on a shared machine shows up in the spread.

It prints crops/s of both and their ratio (target >= 0.8). Usage::

    .venv/bin/python bench/bench_train.py [--crops data/segment/crops.npy] [--n 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctcid.config.train import TrainParams
from ctcid.contracts import BACKBONES, open_crops
from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import LabelledCrops, fit_normalisation, read_crops
from ctcid.model.pixels import CropPixels
from ctcid.model.trainer import FitOptions, fit, flush_denormals, seed_everything


def synthetic_crops(path: Path, n: int, size: int) -> Path:
    """uint16 crops with noise and a bright blob, so the bench needs no pipeline run."""
    rng = np.random.default_rng(0)
    crops = rng.normal(300, 60, size=(n, 3, size, size)).clip(0, None)
    yy, xx = np.mgrid[0:size, 0:size]
    crops[:, 0] += 3000 * (np.hypot(yy - size / 2, xx - size / 2) < size / 5)
    np.save(path, crops.astype(np.uint16))
    return path


def bare_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> float:
    """Seconds for one pass of the minimal training loop."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    started = time.perf_counter()
    for images, labels in batches:
        optimiser.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimiser.step()
    return time.perf_counter() - started


def measure(
    backbone: str, data: LabelledCrops, images: torch.Tensor, config: TrainParams
) -> tuple[float, float, float]:
    """(ctcid crops/s, bare crops/s before, bare crops/s after); ``images``: ``data`` in memory."""
    normalisation = fit_normalisation(data)
    seed_everything(0)
    model = build_classifier(backbone, normalisation, input_size=config.input_size)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    batches = [
        (images[order[i : i + config.batch_size]], data.labels[order[i : i + config.batch_size]])
        for i in range(0, len(data), config.batch_size)
    ]
    batches = [batch for batch in batches if len(batch[1]) > 1]  # as the trainer: no 1-crop batch
    bare_loop(model, batches[:2], config.learning_rate)  # warm-up: kernel selection, allocations
    bare_before = bare_loop(model, batches, config.learning_rate)
    started = time.perf_counter()
    options = replace(FitOptions.from_params(config, seed=0), epochs=1)
    fit(model, data, None, options, show_progress=False)
    ctcid = time.perf_counter() - started
    bare_after = bare_loop(model, batches, config.learning_rate)
    n = sum(len(labels) for _, labels in batches)
    return n / ctcid, n / bare_before, n / bare_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, help="a crops.npy to read (default: synthetic 40 px crops)")
    parser.add_argument("--n", type=int, default=512, help="crops per epoch (default 512)")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # The trainer flushes subnormals (3-4x faster VGG epochs); the bare loop gets the same so the
    # ratio measures the data path and loop overhead, not that fix.
    flush_denormals()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.crops or synthetic_crops(Path(tmp) / "crops.npy", args.n, 40)
        crops = open_crops(path)
        rows = np.arange(min(args.n, len(crops)))
        started = time.perf_counter()
        images = read_crops(crops, rows, args.input_size)  # the bare loop's batches, in memory
        load_seconds = time.perf_counter() - started
        labels = torch.as_tensor(rows % 2, dtype=torch.int64)
        data = LabelledCrops(CropPixels.stored(crops, rows, args.input_size), labels, rows)
        config = TrainParams(input_size=args.input_size, batch_size=args.batch_size)

        print(
            f"{len(data)} crops of {crops.shape[-1]} px -> {args.input_size} px (bare loop: read in "
            f"{load_seconds:.2f} s); batch {args.batch_size}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}"
        )
        header = f"{'backbone':<10} {'ctcid crops/s':>14} {'bare crops/s':>13} {'ratio':>6}"
        print(f"{header}  (bare before/after)")
        for backbone in args.backbones:
            ctcid, before, after = measure(backbone, data, images, config)
            bare = (before + after) / 2
            row = f"{backbone:<10} {ctcid:>14.1f} {bare:>13.1f} {ctcid / bare:>6.2f}"
            print(f"{row}  ({before:.1f}/{after:.1f})")


if __name__ == "__main__":
    main()
