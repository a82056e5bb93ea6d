"""``ctcid serve``: start the newest Bento with ``bentoml serve`` and say how to call it."""

from __future__ import annotations

import os
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


def run(command: list[str]) -> int:
    """Run the server in the foreground until Ctrl+C; its exit status."""
    process = subprocess.Popen(command, env=dict(os.environ))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(timeout=30)
