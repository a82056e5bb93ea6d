"""One field, start to end: nuclei, CEP8 spots, CD45 ring, the rule, features, crops and levels.

:func:`process_field` is what the segment stage maps over raw fields (in worker processes): it
reads and checks a field and returns its manifest rows and crops, or the reason it was
quarantined, never an exception for bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctcid.config.segment import SegmentParams
from ctcid.contracts import BOX
from ctcid.errors import FieldReadError
from ctcid.intensity import field_levels, level_columns
from ctcid.quarantine import QuarantineEntry
from ctcid.raw.fields import FieldRef, read_field
from ctcid.segmentation.crops import cut_crops
from ctcid.segmentation.features import cd45_ring_score, dapi_features, rule_label, shape_features
from ctcid.segmentation.nuclei import NucleiResult, segment_nuclei
from ctcid.segmentation.spots import Spots, detect_cep8_spots, spots_per_nucleus

STAGE = "segment"


@dataclass(frozen=True)
class FieldAnalysis:
    """Everything found in one field; ``table`` has one row per nucleus in ``nuclei`` order."""

    nuclei: NucleiResult
    spots: Spots
    table: pd.DataFrame
    crops: np.ndarray

    def outline(self) -> FieldOutline:
        return FieldOutline(
            contours=tuple(c.contour for c in self.nuclei.nuclei),
            rule=self.table["rule_label"].to_numpy(),
            spot_rows=self.spots.rows,
            spot_cols=self.spots.cols,
        )


@dataclass(frozen=True)
class FieldOutline:
    """What the overlay picture draws of a field: a few kB, so every outcome can carry it."""

    contours: tuple[np.ndarray, ...]
    rule: np.ndarray
    spot_rows: np.ndarray
    spot_cols: np.ndarray


def analyse_field(image: np.ndarray, seg: SegmentParams, channels: Sequence[str]) -> FieldAnalysis:
    """Segment a C x H x W field and measure every nucleus (manifest columns without ids, site and truth).

    The field's intensity levels (:mod:`ctcid.intensity`, estimated from its crops alone) are the
    same on every row; an empty field has empty level columns.
    """
    dapi = image[channels.index("DAPI")]
    result = segment_nuclei(dapi, seg)
    n = len(result.nuclei)
    spots = detect_cep8_spots(image[channels.index("CEP8")], result.labels, seg)
    cep8 = spots_per_nucleus(spots, n)
    centres = np.array([(c.x, c.y) for c in result.nuclei], dtype=np.float64).reshape(-1, 2)
    cd45 = cd45_ring_score(image[channels.index("CD45")], result.labels, centres, seg)
    table = pd.DataFrame(
        {
            "cell_idx": np.arange(n, dtype=np.int32),
            "x": np.array([c.x for c in result.nuclei], dtype=np.float32),
            "y": np.array([c.y for c in result.nuclei], dtype=np.float32),
            **{k: np.array([getattr(c, k) for c in result.nuclei], dtype=np.int32) for k in BOX},
            "field_height": np.full(n, image.shape[1], dtype=np.int32),
            "field_width": np.full(n, image.shape[2], dtype=np.int32),
            **shape_features([c.contour for c in result.nuclei], result.labels),
            **dapi_features(dapi, result.labels, n, result.background),
            "cd45_score": cd45,
            "cep8_spots": cep8,
            "rule_label": rule_label(cd45, cep8, seg),
        }
    )
    crops = cut_crops(image, [(c.x, c.y) for c in result.nuclei], seg.crop_size)
    table = table.assign(**level_columns(field_levels(crops), channels))
    return FieldAnalysis(nuclei=result, spots=spots, table=table, crops=crops)


def input_problem(image: np.ndarray, seg: SegmentParams, channels: Sequence[str]) -> tuple[str, str] | None:
    """(reason, hint) when a readable field is still unusable: a channel saturated or DAPI dark.

    Saturation is checked first: a channel clipped at full scale has no intensity range left, so
    a (mostly) saturated DAPI channel would otherwise be reported as dark, with the opposite advice.
    """
    full = np.iinfo(np.uint16).max
    for index, name in enumerate(channels):
        share = float(np.count_nonzero(image[index] == full)) / image[index].size
        if share > seg.max_saturated_share:
            return (
                f"{name} channel saturated: {share:.1%} of pixels at {full} "
                f"> segment.max_saturated_share {seg.max_saturated_share:.1%}",
                "Shorten the exposure or lower the gain so that stained cells stay below full scale",
            )
    dapi = image[channels.index("DAPI")]
    low, high = np.percentile(dapi[::2, ::2], [0.1, 99.9])
    if high - low < seg.dark_min_range:
        return (
            f"DAPI channel is dark: 0.1-99.9 percentile range {high - low:.0f} counts "
            f"< segment.dark_min_range {seg.dark_min_range:g}",
            "Check lamp, filter and exposure; re-image the field",
        )
    return None


@dataclass(frozen=True)
class FieldOutcome:
    ref: FieldRef
    table: pd.DataFrame | None  # None when quarantined
    crops: np.ndarray | None
    outline: FieldOutline | None
    problem: QuarantineEntry | None

    @classmethod
    def quarantined(cls, ref: FieldRef, reason: str, hint: str) -> FieldOutcome:
        return cls(ref, None, None, None, QuarantineEntry(str(ref.path), STAGE, reason, hint))


def process_field(ref: FieldRef, seg: SegmentParams, channels: Sequence[str]) -> FieldOutcome:
    """Read, check and analyse one field; bad input comes back as a quarantine entry, not an error."""
    try:
        image = read_field(ref.path, len(channels))
    except FieldReadError as error:
        return FieldOutcome.quarantined(ref, error.reason, error.hint)
    problem = input_problem(image, seg, channels)
    if problem is not None:
        return FieldOutcome.quarantined(ref, *problem)
    analysis = analyse_field(image, seg, channels)
    return FieldOutcome(ref, analysis.table, analysis.crops, analysis.outline(), None)
