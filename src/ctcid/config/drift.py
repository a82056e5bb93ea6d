"""The ``drift`` section: out-of-distribution warnings (docs/external.md#drift)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ctcid.config.base import Section


class DriftParams(Section):
    """Out-of-distribution warnings per field and sample (docs/evaluation.md#drift).

    A field's image statistics and crop statistics are compared with the training fields' by a
    Mahalanobis distance under a Ledoit-Wolf covariance; the flag threshold is this quantile of the
    training fields' own out-of-fold distances.
    """

    quantile: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.99
    folds: Annotated[int, Field(ge=2, le=20)] = 5


