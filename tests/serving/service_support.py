"""Helpers of the service tests: a packaged champion and a real ``ctcid serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ctcid.config.params import Params
from ctcid.evaluation.drift import field_features, fit_reference, write_reference
from ctcid.raw.fields import iter_fields, read_field
from ctcid.segmentation.analysis import analyse_field
from factory import wait_until_ok

REPO = Path(__file__).resolve().parents[2]
CTCID = [str(Path(sys.executable).with_name("ctcid"))]  # the installed command, as users run it


@dataclass(frozen=True)
class Packaged:
    """A champion packaged into a private BentoML home, with the params file that made it."""

    params_file: Path
    params: Params
    home: Path
    fields: Path  # <sample>/<field>.tif of a small simulated cohort
    models: Path  # <backbone>/model.pt as training wrote it
    reports: Path
    crops: Path  # the synthetic training crops (24 px)

    def field(self, sample: int = 0, number: int = 0) -> Path:
        return self.fields / f"S{sample:04d}" / f"f{number:03d}.tif"

    def env(self) -> dict[str, str]:
        return {**os.environ, "BENTOML_HOME": str(self.home)}

    def ctcid(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the real CLI from the repository root (where serving/ lies)."""
        return subprocess.run(
            [*CTCID, *args, "--params", str(self.params_file)],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def write_drift_reference(fields_dir: Path, params: Params, path: Path) -> Path:
    """The drift reference of the simulated fields under ``fields_dir``, as evaluate would write it."""
    rows = []
    for ref in iter_fields(fields_dir):
        image = read_field(ref.path, len(params.channels))
        analysis = analyse_field(image, params.segment, params.channels)
        rows.append(field_features(image, analysis.table, analysis.crops, params.channels))
    return write_reference(path, fit_reference(pd.DataFrame(rows), quantile=0.99, folds=4, seed=0))


def write_params(params: Params, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def running_service(packaged: Packaged, port: int, timeout_s: float = 180) -> Iterator[Server]:
    """``ctcid serve --port`` as a subprocess, until /readyz answers; stopped with SIGTERM after."""
    log_path = packaged.home / f"serve-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*CTCID, "serve", "--port", str(port), "--params", str(packaged.params_file)],
            cwd=REPO,
            env=packaged.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_until_ok(process, f"{server.url}/readyz", timeout_s, log_path)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)  # ctcid serve escalates after 10 s and again after 20 s
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
