"""Simulator throughput: one process against all cores, measured in the same run.

    .venv/bin/python bench/bench_simulate.py [--samples 20] [--params params.yaml] [--angle-cost]

Prints fields and cells per second for each, and the parallel speed-up ratio. With ``--angle-cost``
it also times one process with NumPy's ``arctan2`` in place of ``ctcid.angles.polar_angle`` (the
simulator before issue 25, whose pixels depended on the CPU: docs/reproducibility.md) and prints
what the CPU-independent angles cost. Not a test: timings depend on the machine and on whatever
else it is doing.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from ctcid.config.loader import load_params
from ctcid.parallel import worker_count
from ctcid.raw.simulate import cells as simulated_cells
from ctcid.raw.simulate import simulate_dataset


def measure(params, samples: int, workers: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as out:
        start = time.perf_counter()
        summaries = simulate_dataset(params, Path(out), samples, workers=workers, show_progress=False)
        seconds = time.perf_counter() - start
    return seconds, sum(len(s.fields) for s in summaries), sum(s.cells for s in summaries)


@contextlib.contextmanager
def numpy_angles():
    """The simulator as it was: NumPy's arctan2, whose last bits depend on the CPU's SIMD path."""
    import numpy as np

    kept = simulated_cells.polar_angle
    simulated_cells.polar_angle = lambda dy, dx, dtype: np.arctan2(dy, dx).astype(dtype, copy=False)
    try:
        yield
    finally:
        simulated_cells.polar_angle = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="samples per measurement")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--angle-cost", action="store_true", help="also time NumPy's arctan2 in one process")
    args = parser.parse_args()
    params = load_params(args.params)
    cores = worker_count(0)
    measure(params, 1, 1)  # warm-up: imports, first allocation
    serial = measure(params, args.samples, 1)
    parallel = measure(params, args.samples, cores)
    for name, (seconds, fields, cells) in (("1 process", serial), (f"{cores} processes", parallel)):
        print(
            f"{name:>12}: {seconds:6.2f} s  {fields / seconds:7.1f} fields/s  {cells / seconds:8.0f} cells/s"
        )
    print(
        f"speed-up with {cores} processes: {serial[0] / parallel[0]:.2f}x ({args.samples} samples, "
        f"{serial[1]} fields of {params.simulate.field_size} px)"
    )
    if args.angle_cost:
        with numpy_angles():
            old = measure(params, args.samples, 1)
        print(
            f"CPU-independent angles (libm atan2): {serial[0]:.2f} s against {old[0]:.2f} s with NumPy's "
            f"arctan2 in 1 process: x{serial[0] / old[0]:.3f}"
        )


if __name__ == "__main__":
    main()
