"""The ``segment`` section: nuclei, CEP8 spots, CD45 and the rule (docs/segmentation.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ctcid.config.base import OPERATIONAL, NonNegative, PositiveInt, Probability, Section


class SegmentParams(Section):
    """The paper's OpenCV nucleus pipeline plus watershed splitting and per-cell features.

    docs/segmentation.md explains every knob; intensities are in background-noise units or
    relative to the cell's own signal, so that one setting holds across exposures.
    """

    crop_size: Annotated[int, Field(ge=8, le=512)] = 40
    # nucleus detection on DAPI
    gaussian_ksize: Annotated[int, Field(ge=1, le=31)] = 5
    threshold_min_snr: Annotated[float, Field(gt=0.0, le=100.0)] = 6.0
    threshold_scale: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8
    morph_ksize: Annotated[int, Field(ge=1, le=15)] = 3
    morph_iterations: Annotated[int, Field(ge=1, le=8)] = 1
    min_area: PositiveInt = 40
    max_area: PositiveInt = 2500
    # uneven background and dim nuclei (docs/segmentation.md#hard-slides); 0 = off, the default
    background_radius: Annotated[float, Field(ge=0.0, le=500.0)] = 0.0  # px, smooth background removed
    dim_nuclei_snr: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0  # second pass for dim nuclei
    # touching nuclei
    split_touching: bool = True
    watershed_min_distance: Annotated[float, Field(gt=0.0, le=50.0)] = 4.0
    min_peak_radius: Annotated[float, Field(gt=0.0, le=50.0)] = 3.0
    split_min_separation: Annotated[float, Field(gt=0.0, le=2.0)] = 0.575
    # CEP8 spots
    spot_sigma: Annotated[float, Field(gt=0.0, le=10.0)] = 0.7
    spot_snr: Annotated[float, Field(gt=0.0, le=1000.0)] = 6.0
    spot_min_relative: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    spot_mass_sigma: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # > 0: min_relative on light, not peak
    spot_min_distance: Annotated[int, Field(ge=1, le=20)] = 1
    spot_min_dip: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15
    spot_merge_px: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # split signals: closer maxima count once
    spot_margin: Annotated[int, Field(ge=0, le=10)] = 2
    # CD45 membrane ring
    cd45_ring_gap: Annotated[int, Field(ge=0, le=20)] = 1
    cd45_ring_width: Annotated[int, Field(ge=1, le=30)] = 5
    cd45_sectors: Annotated[int, Field(ge=1, le=64)] = 8
    cd45_threshold: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0
    rule_min_spots: Annotated[int, Field(ge=1, le=50)] = 3
    # bad input
    dark_min_range: NonNegative = 50.0
    max_saturated_share: Probability = 0.05
    quarantine_max_share: Probability = 0.2
    # ground truth
    match_max_distance: Annotated[float, Field(gt=0.0, le=100.0)] = 6.0
    workers: Annotated[int, Field(ge=0), OPERATIONAL] = 0  # 0 = one per CPU core

    @field_validator("gaussian_ksize", "morph_ksize")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (OpenCV kernel size)")
        return v

    @model_validator(mode="after")
    def _area_range(self) -> SegmentParams:
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


