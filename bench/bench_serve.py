"""Latency and throughput of the BentoML service against the same work in-process, in one run.

Needs a packaged champion (``make run``, or ``dvc repro`` up to ``package``). In one run:

* **in-process**: the packaged pyfunc and ctcid's own functions (``prepare_field``, ``probabilities``,
  ``field_count``), no server;
* **served**: the newest Bento started with ``bentoml serve`` on a loopback port, called
  sequentially over HTTP: ``/classify`` with 1 and 64 crops, ``/count_field`` on one default field;
* **throughput**: 16 concurrent clients sending ``/classify`` with 8 crops each, against the Bento
  with adaptive batching and a copy built with ``serving.batching: false`` (in a temporary BentoML
  home, so the project's store is untouched).

It prints p50 and p95 latencies and their ratios to in-process (target: ``/count_field`` p50
within 2x), and requests/s with batching on and off. Usage::

    .venv/bin/python bench/bench_serve.py [--params params.yaml] [--field data/raw/S0000/f000.tif] [--reps 40]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
import yaml

from ctcid.config.loader import load_params
from ctcid.offline import go_offline

CTCID = str(Path(sys.executable).with_name("ctcid"))
CLIENTS, CROPS_PER_REQUEST = 16, 8


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)) * 1000, float(np.percentile(times, 95)) * 1000


def timed(call: Callable[[], object], reps: int) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def scratch_home(params_file: Path, prefix: str) -> tuple[Any, Path]:
    """(params, a scratch folder) with a copy of the project's BentoML store as BENTOML_HOME.

    Call before anything imports bentoml: the benches build and serve in the copy, so the
    project's store is untouched.
    """
    go_offline()
    params = load_params(params_file)
    from ctcid.serving.bento import use_bentoml_home

    project_home = use_bentoml_home(params.serving)
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.copytree(project_home, scratch / "bentoml")
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    return params, scratch


def start(bento_tag: str, port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """``bentoml serve`` of a Bento on a loopback port, once /readyz answers; output to ``log``."""
    from ctcid.serving.server import serve_command

    class Tag:
        tag = bento_tag

    out = log.open("w") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        serve_command(Tag, "127.0.0.1", port),
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                return process
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the Bento {bento_tag} did not start")


def stop(process: subprocess.Popen) -> None:
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def throughput(url: str, crops: np.ndarray, seconds: float) -> float:
    """Requests per second of CLIENTS concurrent clients, each sending CROPS_PER_REQUEST crops."""
    body = npy(crops[:CROPS_PER_REQUEST])
    deadline = time.monotonic() + seconds

    def client(_: int) -> int:
        done = 0
        while time.monotonic() < deadline:
            answer = requests.post(f"{url}/classify", files={"crops": ("c.npy", body)}, timeout=120)
            answer.raise_for_status()
            done += 1
        return done

    start_time = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        total = sum(pool.map(client, range(CLIENTS)))
    return total / (time.perf_counter() - start_time)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--field", type=Path, default=Path("data/raw/S0000/f000.tif"))
    parser.add_argument("--crops", type=Path, default=Path("data/segment/crops.npy"))
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each throughput run")
    args = parser.parse_args()
    params, scratch = scratch_home(args.params, "bench-serve-")
    home = scratch / "bentoml"

    from ctcid.serving.bento import latest_bento, load_served, probabilities
    from ctcid.serving.counting import field_count, prepare_field

    bento_on = latest_bento(params.mlflow.model_name)
    served, pyfunc = load_served(bento_on.info.args["model_tag"])
    limits = params.serving
    crops = np.load(args.crops, mmap_mode="r")[:64].astype(np.float32)

    def count_in_process() -> None:
        cut = prepare_field(args.field.name, {args.field.name: args.field}, served, limits)
        field_count(args.field.name, cut, probabilities(pyfunc, cut.crops), served)

    local = {
        "classify 1 crop": timed(lambda: probabilities(pyfunc, crops[:1]), args.reps),
        "classify 64 crops": timed(lambda: probabilities(pyfunc, crops), args.reps),
        "count_field": timed(count_in_process, args.reps),
    }

    # the same Bento without batching, in the scratch store (build arguments are fixed per Bento)
    off = params.model_copy(update={"serving": params.serving.model_copy(update={"batching": False})})
    off_file = scratch / "params-off.yaml"
    off_file.write_text(yaml.safe_dump(off.model_dump(mode="json", by_alias=True)))
    env = {**os.environ, "BENTOML_HOME": str(home)}
    done = subprocess.run(
        [CTCID, "package", "--params", str(off_file), "--reports", str(scratch)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    bento_off = yaml.safe_load((scratch / "package.json").read_text())["bento"]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(str(bento_on.tag), port, env)
    field_bytes = args.field.read_bytes()
    try:
        remote = {
            "classify 1 crop": timed(
                lambda: requests.post(
                    f"{url}/classify", files={"crops": ("c.npy", npy(crops[:1]))}
                ).raise_for_status(),
                args.reps,
            ),
            "classify 64 crops": timed(
                lambda: requests.post(
                    f"{url}/classify", files={"crops": ("c.npy", npy(crops))}
                ).raise_for_status(),
                args.reps,
            ),
            "count_field": timed(
                lambda: requests.post(
                    f"{url}/count_field", files={"field": (args.field.name, field_bytes)}
                ).raise_for_status(),
                args.reps,
            ),
        }
        batched = throughput(url, crops, args.seconds)
    finally:
        stop(server)
    server = start(bento_off, port, env)
    try:
        unbatched = throughput(url, crops, args.seconds)
    finally:
        stop(server)
    shutil.rmtree(scratch, ignore_errors=True)

    print(f"model {served.label}, crops {served.crop_size} px, field {args.field} ({args.reps} reps each)")
    header = ("work", "in-process p50/p95 ms", "served p50/p95 ms", "ratio p50", "ratio p95")
    print(f"{header[0]:<20}{header[1]:>24}{header[2]:>22}{header[3]:>11}{header[4]:>11}")
    for name in local:
        (l50, l95), (r50, r95) = percentiles(local[name]), percentiles(remote[name])
        ratios = f"{r50 / l50:>11.2f}{r95 / l95:>11.2f}"
        print(f"{name:<20}{l50:>11.1f} / {l95:<10.1f}{r50:>10.1f} / {r95:<9.1f}{ratios}")
    ratio = percentiles(remote["count_field"])[0] / percentiles(local["count_field"])[0]
    verdict = "met" if ratio <= 2 else "MISSED"
    print(f"count_field p50 served / in-process: {ratio:.2f} (target <= 2: {verdict})")
    print(
        f"/classify throughput, {CLIENTS} clients x {CROPS_PER_REQUEST} crops: batching on "
        f"{batched:.1f} req/s, off {unbatched:.1f} req/s, ratio {batched / unbatched:.2f}"
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
