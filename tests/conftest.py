"""Shared by every test: no telemetry (src/ctcid/offline.py), and the stage inputs of a tiny cohort.

The model and registry tests train on :func:`synthetic_stage_inputs` (see tests/factory.py).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ctcid.config.split import SplitParams
from ctcid.offline import go_offline
from ctcid.split import make_split, write_split
from factory import CROP_SIZE, POSTGRES, draw_cells, draw_crops, make_annotations, make_manifest

go_offline()
# Under pytest-xdist the workers share the cores, and so do the processes they start (the e2e
# project's dvc stages, the servers): as many OpenMP (torch) threads as cores each would make their
# spinning threads fight over the cores. The in-process tests set one thread themselves.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))
# BentoML reads its home when first imported: never the developer's ~/bentoml from a test
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="ctcid-test-bentoml-"))


# `make test` runs on one pytest-xdist worker per core (scripts/run_tests.sh). A worker builds its
# own session and module fixtures, so the tests that share an expensive one run on one worker: each
# folder below as a whole (the served Bento of serving/, the registry's trained models and MLflow
# server, the browser and servers of ui/), every other module as a whole. The tiny DVC project of
# e2e/ is built once for all workers (tests/e2e_support.py). Work units are handed out in collection
# order, so the order is set here: the longest chain first (the retrain rehearsal, which builds that
# project, minutes, then retrains a copy); then the units that start servers or stages, largest
# first; the units that only use the built project (the browser tests, then the pipeline tests)
# last, so that no worker waits for the build while there is other work.
SHARED_FIXTURE_FOLDERS = ("serving", "registry", "ui")
FIRST, LAST = "tests/e2e/test_retrain.py", ("tests/ui", "tests/e2e/test_pipeline.py")
STARTS_PROCESSES = {"markers": {"slow", "service"}, "fixtures": {"postgres_database", "mlflow_server"}}


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its folder if the folder shares fixtures, else its module."""
    module = nodeid.split("::", 1)[0]
    parts = module.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 and parts[1] in SHARED_FIXTURE_FOLDERS else module


def _starts_processes(item: pytest.Item) -> bool:
    marked = any(item.get_closest_marker(name) for name in STARTS_PROCESSES["markers"])
    return marked or bool(STARTS_PROCESSES["fixtures"] & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(work_unit(item.nodeid), []).append(item)

    def rank(unit: str) -> tuple[int, int]:
        if unit == FIRST:
            return (0, 0)
        if unit in LAST:
            return (3, LAST.index(unit))
        heavy = any(_starts_processes(item) for item in units[unit])
        return (1 if heavy else 2, -len(units[unit]))

    items[:] = [item for unit in sorted(units, key=rank) for item in units[unit]]  # sorted() is stable


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: only called when it is installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session")
def synthetic_stage_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """crops.npy, manifest.parquet, split.json (2 folds) and annotations of 96 cells in 6 samples."""
    root = tmp_path_factory.mktemp("stage_inputs")
    rng = np.random.default_rng(7)
    n = 96
    labels = (rng.random(n) < 0.4).astype(np.float64)
    labels[rng.choice(n, size=8, replace=False)] = np.nan  # unmatched detections: no label
    samples = np.array([f"S{i % 6:03d}" for i in range(n)])
    truth = np.nan_to_num(labels, nan=0.0).astype(bool)
    cells = draw_cells(truth, rng)
    np.save(root / "crops.npy", draw_crops(cells, CROP_SIZE, rng))
    # the rule baseline errs on about one cell in ten, so its ROC is not a perfect corner
    rule = np.where(rng.random(n) < 0.9, truth, ~truth).astype(np.int8)
    manifest = make_manifest(cells=cells, seed=7, sample=samples, true_label=labels, rule_label=rule)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    split = make_split(manifest, SplitParams(by="cell", test_size=0.25, n_folds=2), seed=0)
    write_split(split, root / "split.json")
    for sample in np.unique(samples):
        ctc = int(np.nansum(labels[samples == sample]))
        folder = root / "raw" / sample
        folder.mkdir(parents=True)
        # one CTC more than the labelled ones: a cell segmentation missed still counts as true
        kinds = ["ctc"] * (ctc + 1) + ["leukocyte"] * 3
        make_annotations(cell_type=kinds, sample=sample).to_csv(folder / "annotations.csv", index=False)
    return {
        "crops": root / "crops.npy",
        "manifest": root / "manifest.parquet",
        "split": root / "split.json",
        "raw": root / "raw",
    }


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL, dropped (its connections first) afterwards.

    Skipped, with the reason printed, only where no PostgreSQL answers at :data:`POSTGRES`.
    """
    import psycopg

    try:
        admin = psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL is not reachable at {POSTGRES}: {str(error).strip()}"
        print(reason)
        pytest.skip(reason)
    name = f"ctcid_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
