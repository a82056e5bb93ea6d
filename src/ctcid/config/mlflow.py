"""The ``mlflow`` section: experiment tracking and the registered model's name."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ctcid.config.base import OPERATIONAL, Section


class MlflowParams(Section):
    """Experiment tracking; the default is embedded (SQLite + local folder), a server is config only."""

    # any MLflow tracking URI: sqlite:///mlflow.db (relative to the working directory, the
    # repository root under dvc), postgresql://..., http://tracking-server:5000
    tracking_uri: Annotated[str, Field(min_length=1), OPERATIONAL] = "sqlite:///mlflow.db"
    # artifact root of a newly created experiment: a local folder or a URI (s3://..., file://...)
    artifact_location: Annotated[str, Field(min_length=1), OPERATIONAL] = "mlruns"
    experiment: Annotated[str, Field(min_length=1), OPERATIONAL] = "ctcid"
    # registered model that 'ctcid register' adds versions to and 'ctcid promote' gates
    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = (
        "ctcid-classifier"
    )


