"""Malformed requests and the cost of the request guard: the served Bento with and without it, one run.

Needs a packaged champion (``make run``, or ``dvc repro`` up to ``package``). In one run:

* a copy of the newest Bento is built **without the guard** (``serving/service.py`` less its
  ``add_asgi_middleware(RequestGuard, ...)`` call, the same model and arguments) in a scratch
  BentoML home, so the project's store is untouched;
* both are started on loopback ports, each with its log;
* **good requests**: ``/count_field`` on one field, alternating between the two Bentos, ``--reps``
  each: p50 and p95, and the ratio of the p50s guarded / unguarded with a 95% bootstrap interval
  (target: within 1.05);
* **malformed requests** to each: the cases of ``tests/serving/malformed.py`` for every endpoint
  of ``/docs.json`` and schemathesis' generated requests (fitting and breaking the schema,
  ``--examples`` per operation and mode, derandomized). Printed: requests, status codes, 5xx,
  4xx not in ctcid's error shape, connections to the canary (URLs fetched by the server) and
  tracebacks in the server log.

Usage::

    .venv/bin/python bench/bench_guard.py [--params params.yaml] [--field data/raw/S0000/f000.tif]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import requests
from bench_serve import free_port, scratch_home, start, stop  # bench/ is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))
from malformed import canary, cases, endpoints_of, multipart, problem, send  # noqa: E402

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
    from hypothesis.errors import Unsatisfiable
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

            with contextlib.suppress(Unsatisfiable):  # a GET without parameters: nothing to break
                call()
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--field", type=Path, default=Path("data/raw/S0000/f000.tif"))
    parser.add_argument("--reps", type=int, default=100, help="good requests per Bento")
    parser.add_argument(
        "--examples", type=int, default=60, help="schemathesis examples per operation and mode"
    )
    args = parser.parse_args()
    params, scratch = scratch_home(args.params, "bench-guard-")  # before bentoml is imported

    import bentoml

    from ctcid.serving.bento import ServiceArgs, latest_bento, served_of
    from ctcid.serving.package import build_bento

    guarded = latest_bento(params.mlflow.model_name)
    bento_args = ServiceArgs(**guarded.info.args)
    served = served_of(bentoml.models.get(bento_args.model_tag))
    with contextlib.chdir(unguarded_root(scratch)):  # BentoML reads a build's files below the cwd only
        unguarded, _ = build_bento(Path("."), served, bento_args)
    tags = {"guarded": str(guarded.tag), "unguarded": str(unguarded.tag)}
    urls, servers, logs = {}, {}, {}
    try:
        for name, tag in tags.items():
            port = free_port()
            logs[name] = scratch / f"{name}.log"
            servers[name] = start(tag, port, dict(os.environ), logs[name])
            urls[name] = f"http://127.0.0.1:{port}"
        latencies = good_latencies(urls, args.field, args.reps)
        in_process = guard_cost(args.field)
        upload = args.field.read_bytes()
        tried = {name: malformed_statuses(url, upload) for name, url in urls.items()}
        generated = {name: schemathesis_statuses(url, args.examples) for name, url in urls.items()}
    finally:
        for process in servers.values():
            stop(process)
    texts = {name: logs[name].read_text(errors="replace") for name in logs}
    # a fetch BentoML began: its traceback passes through the function that downloads a URL
    tracebacks = {name: (t.count("Traceback"), t.count("make_safe_connect")) for name, t in texts.items()}
    shutil.rmtree(scratch, ignore_errors=True)
    report(served.label, args, latencies, in_process, tried, generated, tracebacks)


def guard_cost(field: Path, reps: int = 300) -> tuple[float, float]:
    """Median ms of one good /count_field body through the guard into an app that reads it, and without."""
    import asyncio

    from ctcid.serving.forms import FormSpec
    from ctcid.serving.guard import RequestGuard

    boundary = "bench-boundary"
    body = multipart([("field", field.name, field.read_bytes())], boundary)
    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
               (b"content-length", str(len(body)).encode())]
    spec = FormSpec("/count_field", {"field": True}, frozenset({"channel_map"}), frozenset({"field"}))

    async def reader(scope: dict, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def call(app: Any) -> None:
        pieces = [body[i : i + 2**16] for i in range(0, len(body), 2**16)]  # as uvicorn hands them over
        messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
                    for i, p in enumerate(pieces)]

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            pass

        scope = {"type": "http", "method": "POST", "path": "/count_field", "query_string": b""}
        await app({**scope, "headers": headers}, receive, send)

    def median_ms(app: Any) -> float:
        times = []
        for _ in range(reps):
            begin = time.perf_counter()
            asyncio.run(call(app))
            times.append(time.perf_counter() - begin)
        return float(np.median(times)) * 1000

    guarded = RequestGuard(reader, {"/count_field": spec}, max_bytes=1 << 30)
    return median_ms(guarded), median_ms(reader)


def ratio_interval(guarded: list[float], unguarded: list[float], draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the ratio of the two p50s (requests resampled within each Bento)."""
    rng = np.random.default_rng(0)
    a, b = np.asarray(guarded), np.asarray(unguarded)
    ratios = [
        np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(draws)
    ]
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def report(
    label: str,
    args: argparse.Namespace,
    latencies: dict,
    in_process: tuple[float, float],
    tried: dict,
    generated: dict,
    tracebacks: dict,
) -> None:
    describe = ["git", "describe", "--always", "--dirty"]
    commit = subprocess.run(describe, capture_output=True, text=True, cwd=REPO, check=False)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"commit {commit.stdout.strip()}, {cpu}, {os.cpu_count()} cores")
    print(f"model {label}, field {args.field}, {args.reps} good requests per Bento, alternating")
    p50 = {name: float(np.percentile(t, 50)) * 1000 for name, t in latencies.items()}
    p95 = {name: float(np.percentile(t, 95)) * 1000 for name, t in latencies.items()}
    for name in latencies:
        print(f"  {name:<10} /count_field p50 {p50[name]:7.1f} ms   p95 {p95[name]:7.1f} ms")
    ratio = p50["guarded"] / p50["unguarded"]
    low, high = ratio_interval(latencies["guarded"], latencies["unguarded"])
    verdict = "met" if high <= 1.05 else "MISSED" if ratio > 1.05 else "met by the estimate, not its interval"
    print(f"  p50 guarded / unguarded: {ratio:.3f} (95% bootstrap interval {low:.3f}-{high:.3f}; "
          f"target <= 1.05: {verdict})")
    cost = in_process[0] - in_process[1]
    share = 100 * cost / p50["unguarded"]
    print(f"  the guard alone, in-process, on this field's request body: {cost:.2f} ms "
          f"({in_process[0]:.2f} against {in_process[1]:.2f} ms), {share:.2f} % of the p50")
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
        logged, fetches = tracebacks[name]
        print(f"  tracebacks in the server log: {logged}, of which in a URL fetch: {fetches}")


if __name__ == "__main__":
    main()
