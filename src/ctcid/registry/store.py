"""The model registry as ctcid uses it: one registered model, two aliases, versions keyed by content.

``challenger`` marks the newest registered candidate, ``champion`` the version in use (the one the
service serves). Every alias move is one registry call, so an error can never leave an alias
half-moved. Decisions are written as version tags (``promotion.*``) so the history reads in the
MLflow UI's Models page.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ctcid.config import MlflowParams
from ctcid.errors import CtcidError, RegistryError
from ctcid.tracking import client_for

CHAMPION, CHALLENGER = "champion", "challenger"
HASH_TAG = "model_sha256"
PREVIOUS_TAG = "previous_champion"  # set on a version when it becomes champion: what rollback restores
ROLLED_BACK_TAG = "rolled_back"

T = TypeVar("T")


class Registry:
    """The registered model ``params.model_name`` on ``params.tracking_uri``."""

    def __init__(self, params: MlflowParams) -> None:
        self.params = params
        self.name = params.model_name
        self.uri = params.tracking_uri
        self.client: MlflowClient = client_for(params)

    def call(self, what: str, request: Callable[[], T]) -> T:
        """Run a registry request; an MLflow error becomes one message naming the model and URI."""
        try:
            return request()
        except MlflowException as error:
            raise CtcidError(f"registry at {self.uri}: {what} failed: {error.message}") from None

    def exists(self) -> bool:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            return False
        return True

    def require(self) -> None:
        if not self.exists():
            known = [m.name for m in self.call("listing models", self.client.search_registered_models)]
            raise RegistryError(
                f"no registered model {self.name!r} at {self.uri} "
                f"(registered: {', '.join(known) or 'none'}); "
                "run 'ctcid register' (dvc repro) first, or set mlflow.model_name"
            )

    def require_alias(self, alias: str, hint: str) -> ModelVersion:
        """The model's version under ``alias``; RegistryError with ``hint`` (what to run) when unset."""
        self.require()
        version = self.alias(alias)
        if version is None:
            raise RegistryError(f"{self.name!r} has no {alias} version; {hint}")
        return version

    def alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def version(self, number: str | int) -> ModelVersion:
        return self.call(
            f"reading version {number} of {self.name!r}",
            lambda: self.client.get_model_version(self.name, str(number)),
        )

    def versions(self) -> list[ModelVersion]:
        """Every version, newest first."""
        found = self.call(
            f"listing versions of {self.name!r}",
            lambda: self.client.search_model_versions(f"name = '{self.name}'"),
        )
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def aliases(self) -> dict[str, list[str]]:
        """Version number -> its aliases."""
        model = self.call(f"reading {self.name!r}", lambda: self.client.get_registered_model(self.name))
        by_version: dict[str, list[str]] = {}
        for alias, number in (model.aliases or {}).items():
            by_version.setdefault(str(number), []).append(alias)
        return by_version

    def find_by_hash(self, sha256: str) -> ModelVersion | None:
        if not self.exists():
            return None
        return next((v for v in self.versions() if v.tags.get(HASH_TAG) == sha256), None)

    def set_alias(self, alias: str, version: str | int) -> None:
        self.call(
            f"setting {alias} to version {version}",
            lambda: self.client.set_registered_model_alias(self.name, alias, str(version)),
        )

    def tag(self, version: str | int, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.call(
                f"tagging version {version}",
                lambda k=key, v=value: self.client.set_model_version_tag(self.name, str(version), k, str(v)),
            )

    def model_uri(self, alias_or_version: str) -> str:
        suffix = f"/{alias_or_version}" if alias_or_version.isdigit() else f"@{alias_or_version}"
        return f"models:/{self.name}{suffix}"

    def ui_hint(self) -> str:
        """Where a person sees this model in the MLflow UI."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri.rstrip('/')}/#/models/{self.name}"
        return f"mlflow ui --backend-store-uri {self.uri}, open http://127.0.0.1:5000, tab 'Models'"

    def load(self, version: ModelVersion) -> Any:
        """The version as a pyfunc model, or a message naming the version when it does not load."""
        use_registry(self.params)
        try:
            return mlflow.pyfunc.load_model(self.model_uri(str(version.version)))
        except Exception as error:  # missing artifacts, corrupt model.pt, foreign files
            raise CtcidError(
                f"version {version.version} of {self.name!r} does not load ({str(error).splitlines()[0]}); "
                "register a working model ('ctcid register') or roll back"
            ) from None


def use_registry(params: MlflowParams) -> None:
    """Point MLflow's module-level API (model logging and loading) at the configured server."""
    mlflow.set_tracking_uri(params.tracking_uri)
    mlflow.set_registry_uri(params.tracking_uri)
    # a progress bar per downloaded file would bury the gate's table
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
