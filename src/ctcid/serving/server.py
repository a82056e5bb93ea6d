"""``ctcid serve``: start the newest Bento with ``bentoml serve`` and say how to call it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def run(command: list[str], grace_s: float = 30) -> int:
    """Run the server in the foreground; Ctrl+C or SIGTERM stop it gracefully (exit 0).

    The signal is passed on to ``bentoml serve``, which lets requests in flight finish and stops its
    workers; only if it has not stopped after ``grace_s`` is it killed.
    """
    # its own process group: a stop reaches the arbiter and every worker at once, rather than
    # depending on the arbiter passing it on
    process = subprocess.Popen(command, env=dict(os.environ), start_new_session=True)
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        try:
            code = process.wait()
        except KeyboardInterrupt:
            stop()
            code = process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if stopping and code in (0, -signal.SIGTERM, -signal.SIGINT) else code
