"""The gate's expectation suites, defined in code from params and the manifest contract.

One suite per table the gate validates (see :data:`TABLES`). Suites are rebuilt on every run and
written to the GX context with ``add_or_update``, so the code and params.yaml are the only source
of truth; nothing under ``gx/expectations/`` is edited by hand.
"""

from __future__ import annotations

import math
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np

from ctcid.config.segment import SegmentParams
from ctcid.config.split import SplitParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.validate import ValidateParams
from ctcid.contracts import (
    BACKGROUND_COLUMNS,
    CD45_STATES,
    CELL_TYPES,
    CROP_DTYPE,
    MANIFEST_SCHEMA,
    NULLABLE_COLUMNS,
    SCALE_COLUMNS,
    schema_type_name,
)
from ctcid.paths import CROPS_NAME, MANIFEST_FILE
from ctcid.quality.crop_table import channel_range_column

# The manifest contract, as the scalar types GX compares: "int8" also accepts nullable Int8 and
# "str" any string dtype, so the gate checks exactly the schema segment writes.
MANIFEST_TYPES: dict[str, str] = {column: schema_type_name(dt) for column, dt in MANIFEST_SCHEMA.items()}
LABELS = [0, 1]
# A site name as ctcid.raw.sites accepts it in sites.csv.
SITE_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# "finite" for a float32 feature: inside the largest float32 (NaN is caught as a null).
FLOAT_MAX = float(np.finfo(np.float32).max)

# Table name -> what it holds; each has one suite, one dataframe asset and one checkpoint.
TABLES = {
    "manifest": f"{MANIFEST_FILE.as_posix()} as written by segment, one row per cell",
    "crop_array": f"one row: shape and dtype of {CROPS_NAME} against params and the manifest",
    "crops": "one row per crop: content hash and pixel statistics",
    "labels": "one row per cell: label (truth, else rule) and the split's label",
    "samples": "one row per sample: detected cells",
    "fields": "one row per raw field: quarantined or not",
}


class GateConfig(StageConfig):
    """What the validate stage reads: its thresholds and what the next steps will ask of the data."""

    channels: list[str]
    segment: view(SegmentParams, "crop_size")  # type: ignore[valid-type]
    split: view(SplitParams, "n_folds", "test_size", "label_source")  # type: ignore[valid-type]
    validate_: ValidateParams


def suite_name(table: str) -> str:
    return f"ctcid_{table}"


def positives_needed(params: GateConfig) -> int:
    """CTC cells the split needs: params' floor, and one per CV fold after the test hold-out."""
    per_fold = math.ceil(params.split.n_folds / (1.0 - params.split.test_size))
    return max(params.validate_.min_positives, per_fold)


def build_suites(params: GateConfig, manifest_rows: int) -> dict[str, gx.ExpectationSuite]:
    builders = {
        "manifest": lambda: _manifest(params, manifest_rows),
        "crop_array": lambda: _crop_array(params),
        "crops": lambda: _crops(params),
        "labels": lambda: _labels(params),
        "samples": lambda: _samples(params),
        "fields": lambda: _fields(params),
    }
    # expectations go in through the constructor: add_expectation on a suite whose name is already
    # stored would persist the suite once per expectation
    return {
        table: gx.ExpectationSuite(name=suite_name(table), expectations=build(), meta={"rows": TABLES[table]})
        for table, build in builders.items()
    }


def _between(column: str, low: float | None = None, high: float | None = None, **kw: Any) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, **kw)


def _greater(a: str, b: str, or_equal: bool = False) -> gxe.Expectation:
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=or_equal)


def _manifest(params: GateConfig, rows: int) -> list[gxe.Expectation]:
    limits = params.validate_
    # every column but the true_* ones, so also site and the six intensity-level columns
    required = [c for c in MANIFEST_SCHEMA if c not in NULLABLE_COLUMNS]
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(MANIFEST_SCHEMA), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in MANIFEST_TYPES.items()),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required),
        gxe.ExpectColumnValuesToBeUnique(column="cell_uid"),
        gxe.ExpectColumnValuesToMatchRegex(column="cell_uid", regex=r"^[^/]+/[^/]+/\d+$"),
        # row i describes crop i: strictly increasing from 0 to rows - 1
        gxe.ExpectColumnValuesToBeIncreasing(column="crop_index", strictly=True),
        gxe.ExpectColumnMinToBeBetween(column="crop_index", min_value=0, max_value=0),
        gxe.ExpectColumnMaxToBeBetween(column="crop_index", min_value=rows - 1, max_value=rows - 1),
        _between("cell_idx", 0),
        gxe.ExpectColumnValuesToBeInSet(column="rule_label", value_set=LABELS),
        gxe.ExpectColumnValuesToBeInSet(column="true_label", value_set=LABELS),
        gxe.ExpectColumnValuesToBeInSet(column="true_cell_type", value_set=list(CELL_TYPES)),
        gxe.ExpectColumnValuesToBeInSet(column="true_cd45", value_set=list(CD45_STATES)),
        # boxes: inside the field, non-empty, around the centre (x1/y1 exclusive)
        _between("x0", 0),
        _between("y0", 0),
        _between("field_width", 1),
        _between("field_height", 1),
        _greater("field_width", "x1", or_equal=True),
        _greater("field_height", "y1", or_equal=True),
        _greater("x1", "x0"),
        _greater("y1", "y0"),
        _greater("x", "x0", or_equal=True),
        _greater("y", "y0", or_equal=True),
        _greater("x1", "x", or_equal=True),
        _greater("y1", "y", or_equal=True),
        # features: physically possible and finite
        _between("area", 0, FLOAT_MAX, strict_min=True),
        _between("perimeter", 0, FLOAT_MAX, strict_min=True),
        _between("circularity", 0, limits.max_circularity, strict_min=True),
        _between("solidity", 0, 1, strict_min=True),
        _between("dapi_mean", 0, FLOAT_MAX),
        _between("dapi_integrated", 0, FLOAT_MAX),
        _between("cd45_score", -FLOAT_MAX, FLOAT_MAX),
        _between("cep8_spots", 0, limits.max_cep8_spots),
        _between("true_cep8", 0, limits.max_cep8_spots),
        # the site a model's CV can hold out: a name as sites.csv allows (not null: above)
        gxe.ExpectColumnValuesToMatchRegex(column="site", regex=SITE_REGEX),
        # intensity levels (ctcid.intensity): training divides by the scale, so it must be > 0 and
        # finite; the background is a median of camera counts, so finite and >= 0
        *(_between(c, 0, FLOAT_MAX) for c in BACKGROUND_COLUMNS),
        *(_between(c, 0, FLOAT_MAX, strict_min=True) for c in SCALE_COLUMNS),
    ]


def _crop_array(params: GateConfig) -> list[gxe.Expectation]:
    size = params.segment.crop_size
    return [
        gxe.ExpectColumnValuesToBeInSet(column="ndim", value_set=[4]),
        gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[len(params.channels)]),
        gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[size]),
        gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[size]),
        gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=[CROP_DTYPE.name]),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="n_crops", column_B="manifest_rows"),
    ]


def _crops(params: GateConfig) -> list[gxe.Expectation]:
    limits = params.validate_
    expectations: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToBeUnique(column="crop_hash"),
        _between("nonfinite_pixels", 0, 0),
        _between("value_range", limits.min_crop_range),
        _between("saturated_share", high=limits.max_saturated_share),
    ]
    for channel in params.channels:
        # every crop is centred on a nucleus, so DAPI must show it; CEP8 and CD45 are legitimately
        # dark on many cells (CD45 on every CTC), so only a channel dead across the dataset fails
        mostly = 1.0 if channel == "DAPI" else limits.min_marker_range_share
        expectations.append(_between(channel_range_column(channel), limits.min_dynamic_range, mostly=mostly))
    return expectations


def _labels(params: GateConfig) -> list[gxe.Expectation]:
    low, high = params.validate_.ctc_share
    return [
        gxe.ExpectColumnMeanToBeBetween(column="label", min_value=low, max_value=high),
        gxe.ExpectColumnSumToBeBetween(column="split_label", min_value=positives_needed(params)),
    ]


def _samples(params: GateConfig) -> list[gxe.Expectation]:
    low, high = params.validate_.cells_per_sample
    return [_between("n_cells", low, high)]


def _fields(params: GateConfig) -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnMeanToBeBetween(
            column="quarantined", min_value=0, max_value=params.validate_.max_quarantined_share
        )
    ]
