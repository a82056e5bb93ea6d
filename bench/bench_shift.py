"""Cost of the site-shift augmentation per training batch, next to one ResNet18 training step.

    .venv/bin/python bench/bench_shift.py [--batch 64] [--input-size 32] [--repeats 20] [--threads 2]

Times ``ctcid.model.shift.site_shift`` (train.site_shift defaults, every crop shifted: prob 1, the
worst case) on one batch of standardised-scale crops, and one ResNet18 forward + backward + AdamW
step of the same batch on CPU, and prints the median of each and their ratio. Not a test: timings
depend on the machine and on whatever else it is doing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ctcid.config.train import SiteShift
from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import Normalisation
from ctcid.model.shift import DEFAULT_CHANNELS, site_shift
from ctcid.model.trainer import flush_denormals, seed_everything


def median_seconds(step: Callable[[], object], repeats: int) -> float:
    step()  # warm-up: kernel selection, allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flush_denormals()
    seed_everything(0)
    # about the standardised scale: background ~0, cells ~1
    images = torch.rand(args.batch, 3, args.input_size, args.input_size)
    labels = torch.arange(args.batch) % 2
    shift = SiteShift(prob=1.0)
    generator = torch.Generator().manual_seed(0)
    shift_s = median_seconds(lambda: site_shift(images, generator, shift, DEFAULT_CHANNELS), args.repeats)

    model = build_classifier("resnet18", Normalisation.fit(images), input_size=args.input_size)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)
    criterion = nn.CrossEntropyLoss()

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimiser.step()

    step_s = median_seconds(train_step, args.repeats)
    print(
        f"batch {args.batch} x 3 x {args.input_size} x {args.input_size}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, median of {args.repeats}"
    )
    print(f"site_shift (prob 1):            {1000 * shift_s:8.2f} ms")
    print(f"resnet18 forward+backward+step: {1000 * step_s:8.2f} ms")
    print(f"ratio site_shift / train step:  {shift_s / step_s:8.3f}")


if __name__ == "__main__":
    main()
