"""Errors that the CLI reports as one readable message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class CtcidError(Exception):
    """Base class: a problem the user can fix, explained in the message."""


class FieldReadError(CtcidError):
    """A raw field image cannot be used; carries the file and the reason for the quarantine list."""

    def __init__(self, path: Path | str, reason: str, hint: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        message = f"{self.path}: {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)


class GateFailed(CtcidError):
    """A quality gate (quarantine share, data validation, promotion) refused to let data through."""


class TrackingUnavailable(CtcidError):
    """The MLflow tracking server or registry named by ``mlflow.tracking_uri`` does not answer."""


class RegistryError(CtcidError):
    """A registry request that cannot be met: no such model or alias, nothing to roll back to."""
