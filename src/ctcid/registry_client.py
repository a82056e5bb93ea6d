"""The model registry as every step reads it: one registered model, its versions and two aliases.

``challenger`` marks the newest registered candidate, ``champion`` the version in use (the one the
service serves). Fine-tuning from the champion (``train.init: registry``, :mod:`ctcid.model.transfer`),
external validation, packaging and ``ctcid retrain`` read the registry through one
:class:`RegistryClient`; registering versions, moving aliases and tagging decisions are the registry
step's (:class:`ctcid.registry.store.Registry` builds on this client).

It lives in the core, beside :mod:`ctcid.tracking`, because the model step comes before the registry
step and may import only the core and earlier steps (tests/unit/test_layout.py): a client inside
``ctcid.registry`` could not serve fine-tuning. Like :mod:`ctcid.tracking` it imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ctcid.config.mlflow import MlflowParams
from ctcid.errors import CtcidError, RegistryError
from ctcid.tracking import client_for

CHAMPION, CHALLENGER = "champion", "challenger"

T = TypeVar("T")


@dataclass(frozen=True)
class Champion:
    """The version under the ``champion`` alias."""

    model_name: str
    version: str
    run_id: str  # the run that trained it: the version's training_run_id tag, else its own run
    backbone: str  # the version's backbone tag; "" when it has none
    path: Path | None = None  # its model.pt, once downloaded (ctcid.model.transfer)

    def describe(self) -> str:
        return f"{self.model_name} v{self.version} ({self.backbone}, run {self.run_id})"


LOCAL_UI = "http://127.0.0.1:5000"  # where `ctcid ui` (make mlflow) serves the MLflow UI by default
# MLflow 3.17's UI opens in its GenAI view unless the address asks for training (ctcid.pages)
TRAINING_VIEW = "workflowType=machine_learning"


def model_page(base: str, name: str) -> str:
    """The registered model's page in the MLflow UI at ``base``, in the training view."""
    return f"{base}/#/models/{name}?{TRAINING_VIEW}"


class RegistryClient:
    """The registered model ``params.model_name`` on ``params.tracking_uri``, read-only."""

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

    def champion(self) -> Champion | None:
        """The version under ``champion``; None when the model or the alias does not exist."""
        version = self.alias(CHAMPION)
        if version is None:
            return None
        run_id = version.tags.get("training_run_id") or version.run_id
        return Champion(self.name, str(version.version), run_id, version.tags.get("backbone", ""))

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

    def model_uri(self, alias_or_version: str) -> str:
        suffix = f"/{alias_or_version}" if alias_or_version.isdigit() else f"@{alias_or_version}"
        return f"models:/{self.name}{suffix}"

    def ui_hint(self) -> str:
        """Where a person sees this model in the MLflow UI."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {model_page(self.uri.rstrip('/'), self.name)}"
        return f"make mlflow (ctcid ui), then open {model_page(LOCAL_UI, self.name)}"

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

    def download(self, version: str | int, dest: Path) -> Path:
        """Every file of a version (its MLflow model) under ``dest``; MLflow errors pass through."""
        use_registry(self.params)
        uri = self.model_uri(str(version))
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dest)))


def use_registry(params: MlflowParams) -> None:
    """Point MLflow's module-level API (logging, loading, downloading models) at the configured server."""
    mlflow.set_tracking_uri(params.tracking_uri)
    mlflow.set_registry_uri(params.tracking_uri)
    # a progress bar per downloaded file would bury the gate's table
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
