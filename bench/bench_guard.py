"""Malformed requests and the cost of the request guard: the served Bento with and without it, one run.

Needs a packaged champion (``make run``, or ``dvc repro`` up to ``package``). In one run:

* a copy of the newest Bento is built **without the guard** (``serving/service.py`` less its
  ``add_asgi_middleware(RequestGuard, ...)`` call, the same model and arguments) in a scratch
  BentoML home, so the project's store is untouched;
* both are started on loopback ports, each with its log;
* **good requests**: ``/count_field`` on one field, alternating between the two Bentos, ``--reps``
  each: p50 and p95, and the ratio guarded / unguarded (target: p50 within 1.05);
* **malformed requests** to each: the cases of ``tests/serving/malformed.py`` for every endpoint
  of ``/docs.json`` and schemathesis' generated requests (fitting and breaking the schema,
  ``--examples`` per operation and mode, derandomized). Printed: requests, status codes, 5xx,
  4xx not in ctcid's error shape, connections to the canary (URLs fetched by the server) and
  tracebacks in the server log.

Usage::

    .venv/bin/python bench/bench_guard.py [--params params.yaml] [--field data/raw/S0000/f000.tif] [--reps 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests

from ctcid.config import load_params
from ctcid.offline import go_offline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))
from malformed import canary, cases, endpoints_of, problem, send  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GUARD_CALL = "CtcService.add_asgi_middleware(\n    RequestGuard,"


def unguarded_root(scratch: Path) -> Path:
    """A copy of what ``ctcid package`` builds from, its service without the guard's middleware."""
    root = scratch / "unguarded"
    root.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy2(REPO / name, root / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "wheels")
    shutil.copytree(REPO / "src", root / "src", ignore=skip)
    shutil.copytree(REPO / "serving", root / "serving", ignore=skip)
    service = root / "serving" / "service.py"
    text = service.read_text()
    start = text.index(GUARD_CALL)  # fails loudly if the service no longer installs the guard so
    end = text.index(")\n", start) + 2
    service.write_text(text[:start] + text[end:])
    return root


def start(tag: str, port: int, log: Path) -> subprocess.Popen:
    from ctcid.serving.server import serve_command

    class Bento:
        pass

    Bento.tag = tag  # type: ignore[attr-defined]
    with log.open("w") as out:
        command = serve_command(Bento, "127.0.0.1", port)
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                return process
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the Bento {tag} did not start; see {log}")


def stop(process: subprocess.Popen) -> None:
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def good_latencies(urls: dict[str, str], field: Path, reps: int) -> dict[str, list[float]]:
    """Good /count_field requests, alternating between the Bentos so both see the same machine."""
    body = field.read_bytes()
    times: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(reps + 1):
        order = list(urls) if i % 2 else list(reversed(urls))
        for name in order:
            begin = time.perf_counter()
            files = {"field": (field.name, body)}
            answer = requests.post(f"{urls[name]}/count_field", files=files, timeout=300)
            answer.raise_for_status()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - begin)
    return times


def malformed_statuses(url: str, upload: bytes) -> tuple[Counter, int, int, int]:
    """(status counts, answers with a problem, 5xx, canary connections) for tests/serving's cases."""
    statuses: Counter = Counter()
    problems = errors = 0
    with canary() as watched:
        for endpoint in endpoints_of(requests.get(f"{url}/docs.json", timeout=30).json()):
            for case in cases(endpoint, upload, watched.url, seed=0, mutations=12):
                answer = send(url, case)
                statuses[answer.status] += 1
                errors += answer.status >= 500
                problems += problem(case, answer) is not None
        time.sleep(1)  # a fetch started by the last request has time to connect
    return statuses, problems, errors, watched.connections


def schemathesis_statuses(url: str, examples: int) -> Counter:
    """Status counts of schemathesis' generated requests for every operation of /docs.json."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/docs.json", timeout=30)
    statuses: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case) -> None:
                statuses[case.call(base_url=url, timeout=120).status_code] += 1

            call()
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--field", type=Path, default=Path("data/raw/S0000/f000.tif"))
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument(
        "--examples", type=int, default=60, help="schemathesis examples per operation and mode"
    )
    args = parser.parse_args()
    go_offline()
    params = load_params(args.params)
    from ctcid.serving.bento import use_bentoml_home

    project_home = use_bentoml_home(params.serving)
    scratch = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    home = scratch / "bentoml"
    shutil.copytree(project_home, home)
    os.environ["BENTOML_HOME"] = str(home)  # bentoml is imported below, after this

    import bentoml

    from ctcid.serving.bento import ServiceArgs, latest_bento, served_of
    from ctcid.serving.package import build_bento

    guarded = latest_bento(params.mlflow.model_name)
    bento_args = ServiceArgs(**guarded.info.args)
    served = served_of(bentoml.models.get(bento_args.model_tag))
    unguarded, _ = build_bento(unguarded_root(scratch), served, bento_args)
    tags = {"guarded": str(guarded.tag), "unguarded": str(unguarded.tag)}
    from bench_serve import free_port

    urls, servers, logs = {}, {}, {}
    try:
        for name, tag in tags.items():
            port = free_port()
            logs[name] = scratch / f"{name}.log"
            servers[name] = start(tag, port, logs[name])
            urls[name] = f"http://127.0.0.1:{port}"
        latencies = good_latencies(urls, args.field, args.reps)
        upload = args.field.read_bytes()
        tried = {name: malformed_statuses(url, upload) for name, url in urls.items()}
        generated = {name: schemathesis_statuses(url, args.examples) for name, url in urls.items()}
    finally:
        for process in servers.values():
            stop(process)
    tracebacks = {name: logs[name].read_text(errors="replace").count("Traceback") for name in logs}
    shutil.rmtree(scratch, ignore_errors=True)
    report(served.label, args, latencies, tried, generated, tracebacks)


def report(
    label: str, args: argparse.Namespace, latencies: dict, tried: dict, generated: dict, tracebacks: dict
) -> None:
    print(f"model {label}, field {args.field}, {args.reps} good requests per Bento, alternating")
    p50 = {name: float(np.percentile(t, 50)) * 1000 for name, t in latencies.items()}
    p95 = {name: float(np.percentile(t, 95)) * 1000 for name, t in latencies.items()}
    for name in latencies:
        print(f"  {name:<10} /count_field p50 {p50[name]:7.1f} ms   p95 {p95[name]:7.1f} ms")
    ratio = p50["guarded"] / p50["unguarded"]
    print(f"  p50 guarded / unguarded: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    for name in tried:
        statuses, problems, errors, fetched = tried[name]
        made = generated[name]
        print(f"{name}:")
        counts = dict(sorted(statuses.items()))
        print(f"  malformed cases: {sum(statuses.values())} requests, statuses {counts}")
        print(f"    5xx {errors}, answers with a problem (5xx, no answer, 4xx not JSON-shaped) {problems}")
        print(f"    connections to the canary (URLs fetched by the server): {fetched}")
        five = sum(n for s, n in made.items() if s >= 500)
        counts = dict(sorted(made.items()))
        print(f"  schemathesis: {sum(made.values())} requests, statuses {counts}, 5xx {five}")
        print(f"  tracebacks in the server log: {tracebacks[name]}")


if __name__ == "__main__":
    main()
