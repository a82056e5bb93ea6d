"""Offline hygiene in one place: the environment that keeps every tool we drive from phoning home.

The CLI applies it before any step runs, the test suite before any test, and the shell scripts
take the same values from ``python -m ctcid.offline``. Nothing is set at import time.
"""

from __future__ import annotations

import os
import shlex

OFFLINE_ENVIRONMENT = {
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
}


def go_offline() -> None:
    """Set each variable unless the caller has set it already."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


if __name__ == "__main__":  # for shell scripts: eval "$(python -m ctcid.offline)"
    for name, value in OFFLINE_ENVIRONMENT.items():
        print(f"export {name}={shlex.quote(value)}")
