"""Process-parallel map with a progress bar, shared by the per-sample and per-field steps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import cv2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
R = TypeVar("R")


def worker_count(requested: int = 0) -> int:
    """``0`` means one worker per available CPU core."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, requested or available)


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=disable,
    )


def parallel_map(
    func: Callable[[T], R],
    items: Sequence[T],
    description: str,
    workers: int = 0,
    show_progress: bool = True,
) -> list[R]:
    """Apply ``func`` to every item, results in input order; one process when ``workers`` is 1.

    Order is kept so that outputs are byte-identical whatever the number of workers.
    """
    n_workers = min(worker_count(workers), max(1, len(items)))
    results: list[R] = []
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(description, total=len(items))
        if n_workers == 1:
            for item in items:
                results.append(func(item))
                progress.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for result in pool.map(func, items, chunksize=max(1, len(items) // (n_workers * 8))):
                    results.append(result)
                    progress.advance(task)
    return results


@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread count inside the block, restored after (forked workers inherit it).

    Steps parallel across fields or samples run one OpenCV thread per process: more would contend.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
