"""What the tune stage reads of params.yaml: the training recipe it varies and its own section."""

from __future__ import annotations

from ctcid.config.tune import TuneParams
from ctcid.model.train import TrainConfig


class TuneConfig(TrainConfig):
    """The train stage's config (every trial trains as ``ctcid train`` would) plus ``tune``."""

    tune: TuneParams
