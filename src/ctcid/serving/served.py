"""Which model is served, and everything the service needs to use it the way it was trained.

A :class:`ServedModel` is written into the BentoML model's metadata when ``ctcid package`` imports
the champion, and read back by the service, ``ctcid predict`` and ``GET /model``. The segmentation
settings come from the registered version (the settings that cut its training crops), never from
whatever ``params.yaml`` holds at serving time.
"""

from __future__ import annotations

from typing import Any

from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, ConfigDict, Field

from ctcid.config.segment import SegmentParams
from ctcid.errors import CtcidError
from ctcid.evaluation.drift import DriftReference
from ctcid.registry_client import CHAMPION

# Version tags shown by GET /model: the card's headline numbers.
HEADLINE_PREFIXES = ("test.", "rule.", "cv.")


class ServedModel(BaseModel):
    """The served version: identity, thresholds, segmentation and lineage."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "example": {
                "name": "ctcid-classifier",
                "version": "3",
                "alias": CHAMPION,
                "run_id": "4f1c2d9e8b7a4c3d9e1f2a3b4c5d6e7f",
                "backbone": "resnet18",
                "init": "scratch",
                "channels": ["DAPI", "CEP8", "CD45"],
                "crop_size": 40,
                "input_size": 32,
                "operating_threshold": 0.31,
                "counting_threshold": 0.957,
                "segment": {"crop_size": 40},
                "model_sha256": "9c2e...",
                "data_md5": "b1946ac92492d2347c6235b4d2611184.dir",
                "git_commit": "538256c...",
                "params_sha256": "77aa...",
                "metrics": {"test.auc": "0.993", "test.auc.ci95": "[0.99, 0.996]", "rule.auc": "0.977"},
            }
        },
    )

    name: str = Field(description="registered model name")
    version: str = Field(description="registry version number")
    alias: str = Field(description="alias the version was packaged under (champion)")
    run_id: str = Field(description="MLflow run that trained it")
    backbone: str
    init: str
    channels: list[str] = Field(description="channel order of fields and crops")
    crop_size: int = Field(description="side of the crop cut around each nucleus, px")
    input_size: int = Field(description="side the network sees after resizing, px")
    operating_threshold: float = Field(description="CTC call for review (chosen for sensitivity)")
    counting_threshold: float = Field(description="cells at or above it are counted per patient")
    segment: SegmentParams = Field(description="segmentation settings the training crops were cut with")
    model_sha256: str
    data_md5: str = Field(description="DVC hash of the raw data it was trained on")
    git_commit: str
    params_sha256: str
    metrics: dict[str, str] = Field(description="headline test, rule and CV metrics from the card")
    standardise: bool = Field(
        default=False,
        description="crops reach the network as (counts - field background) / field scale (ctcid.intensity); "
        "False for versions trained on raw counts",
    )
    drift: DriftReference | None = Field(
        default=None,
        description="where the training fields lie, to flag unfamiliar fields (None: registered before ctcid "
        "stored it; fields are then not checked)",
    )

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @classmethod
    def from_version(cls, version: ModelVersion, alias: str, logged: dict[str, Any]) -> ServedModel:
        """From a registry version (its tags) and its logged model's ``ctcid`` metadata."""
        tags = dict(version.tags or {})
        if "segment" not in logged or "counting_threshold" not in logged:
            raise CtcidError(
                f"version {version.version} of {version.name!r} was registered without its "
                "segmentation settings (registered by an older ctcid); re-register it "
                "('dvc repro -f register promote') and package again"
            )
        return cls(
            name=version.name,
            version=str(version.version),
            alias=alias,
            run_id=version.run_id or tags.get("training_run_id", ""),
            backbone=str(logged["backbone"]),
            init=str(logged["init"]),
            channels=list(logged["channels"]),
            crop_size=int(logged["crop_size"]),
            input_size=int(logged["input_size"]),
            operating_threshold=float(logged["threshold"]),
            counting_threshold=float(logged["counting_threshold"]),
            segment=SegmentParams.model_validate(logged["segment"]),
            model_sha256=str(logged.get("model_sha256", tags.get("model_sha256", ""))),
            data_md5=tags.get("dvc.md5.data/raw", "unversioned"),
            git_commit=tags.get("git_commit", "unknown"),
            params_sha256=tags.get("params_sha256", ""),
            metrics={k: v for k, v in sorted(tags.items()) if k.startswith(HEADLINE_PREFIXES)},
            standardise=bool(logged.get("standardise", False)),
            drift=DriftReference.model_validate(logged["drift"]) if logged.get("drift") else None,
        )

    def labels(self) -> dict[str, str]:
        """BentoML model labels: short strings to find and list models by."""
        return {
            "registry_version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "data_md5": self.data_md5,
            "model_sha256": self.model_sha256[:16],
            "backbone": self.backbone,
        }
