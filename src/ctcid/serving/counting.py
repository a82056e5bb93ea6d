"""A field in, its cells and CTC counts out: the segment step's analysis, then the served model.

:func:`cut_field` runs the same analysis as the segment stage (nuclei, CEP8 spots, CD45 ring, the
rule, crops) with the settings the served model was trained with; the crops are then scored by
whoever holds the model (the service's batching scorer, or ``ctcid predict`` in-process) and
:func:`field_count` turns the probabilities into the answer. Counting uses the version's counting
threshold (the per-patient count evaluate reports); ``ctc`` marks cells at the operating threshold,
the sensitive call meant for review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ctcid.config.serving import ServingParams
from ctcid.errors import InputRejected
from ctcid.evaluation.drift import CELLS, IMAGING, field_features
from ctcid.intensity import manifest_levels, model_input
from ctcid.segmentation.analysis import FieldAnalysis, analyse_field
from ctcid.serving.served import ServedModel
from ctcid.serving.uploads import check_usable, read_field_files


class CellCall(BaseModel):
    cell: int = Field(description="index of the nucleus in the field")
    x: float = Field(description="nucleus centre, px from the left")
    y: float = Field(description="nucleus centre, px from the top")
    x0: int
    y0: int
    x1: int
    y1: int
    ctc_probability: float = Field(description="the model's CTC probability")
    ctc: bool = Field(description="called CTC at the operating threshold (flag for review)")
    counted: bool = Field(description="counted as CTC (probability >= counting threshold)")
    cep8_spots: int = Field(description="CEP8 FISH spots found in the nucleus")
    cd45_score: float = Field(description="CD45 ring signal over background noise")
    rule_ctc: bool = Field(description="the paper's rule: CD45- and CEP8 >= 3")


class FieldCount(BaseModel):
    field: str = Field(description="the field's name (its file name)")
    width: int
    height: int
    cells: int = Field(description="nuclei found")
    ctc_count: int = Field(description="CTCs counted by the model")
    ctc_flagged: int = Field(description="cells the model flags at its operating threshold")
    rule_count: int = Field(description="CTCs by the rule (CD45- and CEP8 >= 3)")
    model: str = Field(description="name and version of the model that scored the cells")
    drift_score: float | None = Field(
        default=None,
        description="distance of the field's image and crop statistics from the training fields "
        "(Mahalanobis; null when the model carries no reference)",
    )
    drift_flag: bool = Field(
        default=False, description="the field looks unlike the training fields: check the counts by eye"
    )
    drift_reason: str = Field(default="", description="the features furthest from the training fields")
    drift_kind: str = Field(
        default="",
        description="of a flagged field: 'imaging' (another scanner, stain or exposure) or 'cells' (cells "
        "unlike the training patients', e.g. CTCs dominating the field)",
    )
    note: str = ""
    cell_table: list[CellCall] = Field(default_factory=list)

    model_config = {
        "json_schema_extra": {
            "example": {
                "field": "f000.tif",
                "width": 512,
                "height": 512,
                "cells": 41,
                "ctc_count": 2,
                "ctc_flagged": 3,
                "rule_count": 2,
                "model": "ctcid-classifier v3",
                "drift_score": 3.2,
                "drift_flag": False,
                "drift_reason": "",
                "drift_kind": "",
                "note": "",
                "cell_table": [
                    {
                        "cell": 0,
                        "x": 101.4,
                        "y": 37.9,
                        "x0": 93,
                        "y0": 30,
                        "x1": 110,
                        "y1": 46,
                        "ctc_probability": 0.991,
                        "ctc": True,
                        "counted": True,
                        "cep8_spots": 4,
                        "cd45_score": 0.2,
                        "rule_ctc": True,
                    }
                ],
            }
        }
    }


class FieldProblem(BaseModel):
    field: str
    status: int = Field(description="the HTTP status this field alone would get")
    reason: str
    hint: str = ""


class FieldSummary(BaseModel):
    field: str
    cells: int
    ctc_count: int
    ctc_flagged: int
    rule_count: int
    drift_flag: bool = False


class SampleCount(BaseModel):
    sample: str = Field(description="the patient sample's name")
    ctc_count: int = Field(description="CTCs counted by the model over the usable fields")
    ctc_flagged: int
    rule_count: int
    cells: int
    fields_sent: int
    fields_used: int
    model: str
    drift_flag: bool = Field(
        default=False,
        description="the sample's fields look unlike the training fields (mean drift score above the "
        "model's threshold): the count may be wrong, review it",
    )
    fields_drift_flagged: int = Field(default=0, description="usable fields flagged as unfamiliar")
    per_field: list[FieldSummary]
    problems: list[FieldProblem] = Field(description="fields that could not be used, and why")

    model_config = {
        "json_schema_extra": {
            "example": {
                "sample": "S0007",
                "ctc_count": 3,
                "ctc_flagged": 4,
                "rule_count": 3,
                "cells": 85,
                "fields_sent": 3,
                "fields_used": 2,
                "model": "ctcid-classifier v3",
                "drift_flag": False,
                "fields_drift_flagged": 0,
                "per_field": [
                    {"field": "f000.tif", "cells": 41, "ctc_count": 2, "ctc_flagged": 3, "rule_count": 2},
                    {"field": "f001.tif", "cells": 44, "ctc_count": 1, "ctc_flagged": 1, "rule_count": 1},
                ],
                "problems": [
                    {"field": "f002.tif", "status": 422, "reason": "DAPI channel is dark", "hint": "re-image"}
                ],
            }
        }
    }


@dataclass(frozen=True)
class CutField:
    """One analysed field: its pixels, the segment step's analysis and the crops to score (float32)."""

    image: np.ndarray
    analysis: FieldAnalysis
    crops: np.ndarray


def cut_field(image: np.ndarray, served: ServedModel) -> CutField:
    analysis = analyse_field(image, served.segment, served.channels)
    # the levels segmentation measured on this field's cells, as for the training crops
    levels = manifest_levels(analysis.table, served.channels) if served.standardise else None
    return CutField(image, analysis, model_input(analysis.crops, levels, served.standardise))


def prepare_field(
    name: str,
    files: Mapping[str, Path],
    served: ServedModel,
    limits: ServingParams,
    channel_map: str | None = None,
) -> CutField:
    """Read, check and cut one field: everything before scoring, for the service and ``ctcid predict``."""
    image = read_field_files(files, served.channels, limits, channel_map)
    check_usable(image, name, served.segment, served.channels)
    return cut_field(image, served)


def problem_of(name: str, error: InputRejected) -> FieldProblem:
    return FieldProblem(field=name, status=error.status, reason=error.reason, hint=error.hint)


def field_count(name: str, cut: CutField, probabilities: np.ndarray, served: ServedModel) -> FieldCount:
    table = cut.analysis.table
    if len(probabilities) != len(table):
        raise ValueError(f"{len(probabilities)} scores for {len(table)} cells")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    flagged = probabilities >= served.operating_threshold
    counted = probabilities >= served.counting_threshold
    rule = table["rule_label"].to_numpy() == 1
    cells = [
        CellCall(
            cell=int(row.cell_idx),
            x=float(row.x),
            y=float(row.y),
            x0=int(row.x0),
            y0=int(row.y0),
            x1=int(row.x1),
            y1=int(row.y1),
            ctc_probability=float(p),
            ctc=bool(f),
            counted=bool(c),
            cep8_spots=int(row.cep8_spots),
            cd45_score=float(row.cd45_score),
            rule_ctc=bool(r),
        )
        for row, p, f, c, r in zip(table.itertuples(), probabilities, flagged, counted, rule, strict=True)
    ]
    height, width = (int(v) for v in cut.analysis.nuclei.labels.shape)
    drift = field_drift(cut, served)
    notes = [] if cells else ["no nuclei found in the DAPI channel"]
    if drift.flag:
        advice = _DRIFT_ADVICE[drift.kind]
        notes.append(f"field unlike the model's training fields ({drift.reason}): {advice}")
    return FieldCount(
        field=name,
        width=width,
        height=height,
        cells=len(cells),
        ctc_count=int(counted.sum()),
        ctc_flagged=int(flagged.sum()),
        rule_count=int(rule.sum()),
        model=served.label,
        drift_score=drift.score,
        drift_flag=drift.flag,
        drift_reason=drift.reason,
        drift_kind=drift.kind,
        note="; ".join(notes),
        cell_table=cells,
    )


_DRIFT_ADVICE = {
    IMAGING: "another scanner, stain or exposure? the counts may be wrong; review them",
    CELLS: "its cells are unlike the training patients' (e.g. CTCs dominating the field); review the count",
}


@dataclass(frozen=True)
class FieldDrift:
    score: float | None
    flag: bool
    reason: str
    kind: str


def field_drift(cut: CutField, served: ServedModel) -> FieldDrift:
    """The field against the training fields the served model carries (none: not checked)."""
    if served.drift is None:
        return FieldDrift(None, False, "", "")
    features = field_features(cut.image, cut.analysis.table, cut.analysis.crops, served.channels)
    row = served.drift.score(pd.DataFrame([features])).iloc[0]
    return FieldDrift(
        float(row["drift_score"]), bool(row["drift_flag"]), str(row["drift_reason"]), str(row["drift_kind"])
    )


def sample_count(
    sample: str, results: Sequence[FieldCount], problems: Sequence[FieldProblem], served: ServedModel
) -> SampleCount:
    """The patient's count over its usable fields; the unusable ones are listed, not fatal.

    The sample is flagged like ``ctcid external`` flags a patient: its fields' mean drift score
    above the model's threshold.
    """
    scores = [r.drift_score for r in results if r.drift_score is not None]
    threshold = served.drift.threshold if served.drift is not None else float("inf")
    return SampleCount(
        sample=sample,
        ctc_count=sum(r.ctc_count for r in results),
        ctc_flagged=sum(r.ctc_flagged for r in results),
        rule_count=sum(r.rule_count for r in results),
        cells=sum(r.cells for r in results),
        fields_sent=len(results) + len(problems),
        fields_used=len(results),
        model=served.label,
        drift_flag=bool(scores) and float(np.mean(scores)) > threshold,
        fields_drift_flagged=sum(r.drift_flag for r in results),
        per_field=[
            FieldSummary(
                field=r.field,
                cells=r.cells,
                ctc_count=r.ctc_count,
                ctc_flagged=r.ctc_flagged,
                rule_count=r.rule_count,
                drift_flag=r.drift_flag,
            )
            for r in results
        ],
        problems=list(problems),
    )
