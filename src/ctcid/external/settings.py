"""What the external stages read of params.yaml."""

from __future__ import annotations

from ctcid.config.external import ExternalParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.train import TrainParams


class ExternalConfig(StageConfig):
    """The external stage: the cohorts and how to report them, which models to score on them.

    ``train.target_sensitivity`` sets the GBM baseline's out-of-fold operating threshold.
    """

    seed: int
    channels: list[str]
    train: view(TrainParams, "backbones", "device", "target_sensitivity")  # type: ignore[valid-type]
    external: ExternalParams
    mlflow: MlflowParams  # the champion: <model_name>@champion
