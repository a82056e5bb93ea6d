"""``ctcid serve``: start the newest Bento with ``bentoml serve`` and say how to call it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

EXAMPLE_FIELD = Path("data/raw/S0000/f000.tif")


def serve_command(bento: Any, host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line of a built Bento on ``host:port``."""
    bentoml = Path(sys.executable).with_name("bentoml")
    launcher = [str(bentoml)] if bentoml.is_file() else [sys.executable, "-m", "bentoml"]
    return [*launcher, "serve", str(bento.tag), "--host", host, "--port", str(port)]


def how_to_call(host: str, port: int) -> str:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return (
        f"ctcid service on {url}  (Swagger UI: {url}/ ; health: {url}/readyz ; metrics: {url}/metrics)\n"
        f"  curl -F field=@{EXAMPLE_FIELD} {url}/count_field\n"
        f"  curl {url}/model"
    )


def run(command: list[str], grace_s: float = 10.0) -> int:
    """Run the server in the foreground; Ctrl+C or SIGTERM stop it (exit 0 when it stopped in time).

    The Bento runs in a session of its own: Ctrl+C in a terminal reaches only this process, which
    then stops the arbiter and its workers in order (:func:`stop_group`).
    """
    process = subprocess.Popen(command, env=dict(os.environ), start_new_session=True)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while process.poll() is None and not stopping.is_set():
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                stopping.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not stopping.is_set():
        return process.returncode
    return stop_group(process, grace_s)


def stop_group(process: subprocess.Popen, grace_s: float) -> int:
    """Stop the arbiter and every worker it started (each worker runs in a session of its own).

    SIGTERM first: requests in flight finish. A worker still alive after ``grace_s`` gets a second
    SIGTERM (uvicorn's forced shutdown: it stops waiting for clients to close their connections),
    then SIGKILL. BentoML's API worker sometimes never finishes its own shutdown once the scorer
    has stopped (docs/serving.md); by then it serves nothing, so killing it loses no request: the
    stop is reported, and counts as done (exit 0) once no process of the Bento is left.
    """
    try:
        procs = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGKILL:
            names = ", ".join(f"{p.pid}" for p in procs)
            print(f"ctcid serve: killing what did not stop after two SIGTERMs: pid {names}", file=sys.stderr)
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=grace_s)
        if not procs:
            process.wait()
            return 0
    return 1
