"""The ``split`` section: train/test split and CV folds (docs/evaluation.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ctcid.config.base import Section
from ctcid.contracts import LabelSource


class SplitParams(Section):
    """Train/test split, class balance and CV folds; docs/evaluation.md explains each choice."""

    # sample: every patient's cells on one side (honest for new patients); cell: the paper's split
    by: Literal["sample", "cell"] = "sample"
    # share of labelled cells held out; by sample it is met to the nearest 1/round(1/test_size) fold
    test_size: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    # CV folds over the training patients (the paper: 5)
    n_folds: Annotated[int, Field(ge=2, le=20)] = 5
    # truth: annotated true_label; rule: the segmentation's rule_label (no annotations needed)
    label_source: LabelSource = "truth"
    # samples: n_folds folds of whole patients; sites: leave-one-site-out (one fold per training
    # site of the manifest's site column, n_folds ignored), so selection sees an unseen site
    cv: Literal["samples", "sites"] = "samples"

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        if isinstance(values, dict) and "balance" in values:
            raise ValueError(
                "split.balance moved to train.negatives (downsample | class_weight | resample), "
                "which tuning can choose per backbone; delete split.balance"
            )
        return values


