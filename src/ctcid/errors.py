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


class InputRejected(CtcidError):
    """A request's input the service cannot use; ``status`` is the HTTP status it answers (4xx).

    ``field`` names the form field or file, ``reason`` what was wrong, ``hint`` what is accepted.
    ``ctcid predict`` raises the same errors for files on disk, so both say the same thing.
    """

    def __init__(self, status: int, field: str, reason: str, hint: str = "") -> None:
        self.status, self.field, self.reason, self.hint = status, field, reason, hint
        message = f"{field}: {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)

    def as_dict(self) -> dict[str, str | int]:
        return {"status": self.status, "field": self.field, "reason": self.reason, "hint": self.hint}
