"""The model registry as the registry step writes it: versions keyed by content, aliases, decisions.

Reading (the aliases ``champion`` and ``challenger``, versions, loading) is the core's
:class:`ctcid.registry_client.RegistryClient`, which training, external validation and serving share;
:class:`Registry` adds what only this step does. Every alias move is one registry call, so an error
can never leave an alias half-moved. Decisions are written as version tags (``promotion.*``) so the
history reads in the MLflow UI's Models page.
"""

from __future__ import annotations

from typing import Any

from mlflow.entities.model_registry import ModelVersion

from ctcid.registry_client import RegistryClient

HASH_TAG = "model_sha256"
PREVIOUS_TAG = "previous_champion"  # set on a version when it becomes champion: what rollback restores
ROLLED_BACK_TAG = "rolled_back"


class Registry(RegistryClient):
    """The registered model ``params.model_name`` on ``params.tracking_uri``, read and written."""

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
