"""The ``validate`` section: the Great Expectations data gate (docs/validation.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from ctcid.config.base import IntRange, Probability, Range, Section, ordered

PixelLevel = Annotated[float, Field(ge=0.0, le=65535.0)]  # 16-bit camera counts


class ValidateParams(Section):
    """Thresholds of the Great Expectations data gate; docs/validation.md explains each check."""

    # cohort: CTC share of cells (true_label where known, else rule_label)
    ctc_share: Range = (0.01, 0.20)
    # CTC-labelled cells the split's label source must offer (the gate also asks for enough for
    # split.n_folds folds after the test hold-out)
    min_positives: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    cells_per_sample: IntRange = (1, 5000)
    max_quarantined_share: Probability = 0.2
    # manifest features
    max_circularity: Annotated[float, Field(ge=1.0, le=10.0)] = 1.5
    max_cep8_spots: Annotated[int, Field(ge=3, le=1000)] = 50
    # crops
    min_crop_range: PixelLevel = 20.0
    min_dynamic_range: PixelLevel = 50.0
    min_marker_range_share: Probability = 0.5
    max_saturated_share: Probability = 0.05

    @field_validator("ctc_share")
    @classmethod
    def _share_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0.0 or v[1] > 1.0:
            raise ValueError(f"shares must lie within [0, 1], got [{v[0]:g}, {v[1]:g}]")
        return ordered(v)

    @field_validator("cells_per_sample")
    @classmethod
    def _count_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0:
            raise ValueError(f"cell counts cannot be negative, got [{v[0]}, {v[1]}]")
        ordered(v)
        return v


