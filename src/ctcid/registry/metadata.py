"""What a registered version says about itself, gathered from the run and the reports, never typed.

:func:`collect` reads the selected backbone's saved model, ``reports/metrics.json`` (test metrics
with 95 % intervals, the rule on the same cells, per-patient counting), the manifest (cohort size
and provenance) and the lineage (git commit, DVC hashes, params hash). The result becomes the
version's tags and description (:meth:`VersionFacts.tags`) and its model card (:mod:`.card`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ctcid.config.stage import StageConfig
from ctcid.contracts import CELL_TYPES, cell_labels
from ctcid.errors import CtcidError
from ctcid.model.predict import ModelInfo
from ctcid.paths import CARD_FILE
from ctcid.tracking import lineage_tags

# The cell metrics a version carries, with their 95 % intervals.
CELL_METRICS = ("auc", "sensitivity", "specificity", "f1")
PATIENT_METRICS = ("mae", "bias", "spearman", "agreement_ge1", "agreement_ge5")
_SIMULATED_SAMPLE = re.compile(r"^S\d{4}$")


@dataclass(frozen=True)
class Cohort:
    samples: int
    detections: int
    labelled: int
    ctc: int
    source: str  # "simulated" or "ingested"

    @property
    def ctc_share(self) -> float:
        return self.ctc / self.labelled if self.labelled else math.nan


@dataclass(frozen=True)
class VersionFacts:
    """Everything known about one candidate model, from files the pipeline wrote."""

    backbone: str
    info: ModelInfo
    crop_size: int
    run_id: str
    model_sha256: str
    metrics: dict[str, Any]  # metrics.json models[<backbone>]
    rule: dict[str, Any]  # metrics.json models["rule"]
    test: dict[str, Any]  # metrics.json test
    cohort: Cohort
    lineage: dict[str, str] = field(default_factory=dict)
    params_sha256: str = ""

    @property
    def counting_threshold(self) -> float:
        """The threshold its per-patient counts are counted at: see :func:`counting_threshold`."""
        return _counting(self.metrics, self.info, self.test)

    def tags(self) -> dict[str, str]:
        """Version tags: flat, string-valued, searchable in the UI and by ``ctcid models``."""
        operating, intervals = self.metrics["operating"], self.metrics.get("ci95", {})
        tags = {
            "backbone": self.backbone,
            "init": self.info.init,
            "input_size": str(self.info.input_size),
            "crop_size": str(self.crop_size),
            "channels": ",".join(self.info.channels),
            "operating_threshold": _fmt(self.info.threshold),
            "counting_threshold": _fmt(self.counting_threshold),
            "training_run_id": self.run_id,
            "model_sha256": self.model_sha256,
            "params_sha256": self.params_sha256,
            "data_source": self.cohort.source,
            "test_cells": str(self.test.get("cells")),
            "test_ctc": str(self.test.get("ctc")),
            "test_patients": str(self.test.get("samples")),
        }
        tags.update({f"cv.{k}": _fmt(v) for k, v in sorted(self.info.cv.items())})
        for name in CELL_METRICS:
            tags[f"test.{name}"] = _fmt(operating.get(name))
            if name in intervals:
                tags[f"test.{name}.ci95"] = (
                    f"[{_fmt(intervals[name]['low'])}, {_fmt(intervals[name]['high'])}]"
                )
            tags[f"rule.{name}"] = _fmt(self.rule.get("operating", {}).get(name))
        for name in PATIENT_METRICS:
            tags[f"test.patient_{name}"] = _fmt(self.metrics.get("patients", {}).get(name))
            tags[f"rule.patient_{name}"] = _fmt(self.rule.get("patients", {}).get(name))
        tags.update({_tag_key(k): v for k, v in self.lineage.items() if not k.startswith("mlflow.")})
        return tags

    def description(self) -> str:
        """One paragraph for the Models page; the card has the rest."""
        m, r = self.metrics["operating"], self.rule.get("operating", {})
        ci = self.metrics.get("ci95", {})
        return (
            f"{self.backbone} ({self.info.init}, {self.info.input_size} px) CTC classifier, "
            "research use only. "
            f"Test set of {self.test.get('cells')} cells ({self.test.get('ctc')} CTC) from "
            f"{self.test.get('samples')} patients: AUC {_fmt(m.get('auc'))} {_ci(ci, 'auc')}, "
            f"sensitivity {_fmt(m.get('sensitivity'))} {_ci(ci, 'sensitivity')}, "
            f"specificity {_fmt(m.get('specificity'))} {_ci(ci, 'specificity')} at threshold "
            f"{_fmt(self.info.threshold)}; the rule: sensitivity {_fmt(r.get('sensitivity'))}, "
            f"specificity {_fmt(r.get('specificity'))}. Trained in run {self.run_id} on "
            f"{self.cohort.source} data (raw {self.lineage.get('dvc.raw_md5', 'unversioned')}), commit "
            f"{self.lineage.get('git_commit', 'unknown')}. Model card: artifact model_card/{CARD_FILE}."
        )


def collect(
    params: StageConfig,
    backbone: str,
    info: ModelInfo,
    crop_size: int,
    run_id: str,
    model_sha256: str,
    report: dict[str, Any],
    manifest: pd.DataFrame,
    label_source: str,
) -> VersionFacts:
    """``report`` is ``reports/metrics.json`` as :func:`read_metrics` returns it."""
    if backbone not in report["models"] or "rule" not in report["models"]:
        raise CtcidError(
            f"the evaluation report has no test results for {backbone} and the rule; "
            "run 'ctcid evaluate' (dvc repro)"
        )
    return VersionFacts(
        backbone=backbone,
        info=info,
        crop_size=crop_size,
        run_id=run_id,
        model_sha256=model_sha256,
        metrics=report["models"][backbone],
        rule=report["models"]["rule"],
        test=report["test"],
        cohort=cohort(manifest, label_source),
        lineage=lineage_tags(),
        params_sha256=params_hash(params),
    )


def counting_threshold(report: dict[str, Any], backbone: str, info: ModelInfo | None = None) -> float:
    """The per-patient counting threshold of ``backbone`` in ``reports/metrics.json``.

    What evaluate counted its test patients at (``models.<backbone>.counting_threshold``: its own,
    chosen on out-of-fold counts), else the model's own (``info``), else the test summary's
    prior-corrected one (reports written before models had their own), else 0.5.
    """
    return _counting(report.get("models", {}).get(backbone, {}), info, report.get("test", {}))


def _counting(metrics: dict[str, Any], info: ModelInfo | None, test: dict[str, Any]) -> float:
    for value in (
        metrics.get("counting_threshold"),
        None if info is None else info.count_threshold,
        test.get("count_threshold"),
    ):
        if value is not None:
            return float(value)
    return 0.5


def read_metrics(path: Path) -> dict[str, Any]:
    """``reports/metrics.json`` as evaluate wrote it, or a message saying how to make it."""
    try:
        report = json.loads(Path(path).read_text())
        report["models"], report["test"], report["selected"]  # noqa: B018 (the keys the registry needs)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CtcidError(
            f"{path}: no evaluation report ({error}); run 'ctcid evaluate' (dvc repro)"
        ) from None
    return report


def cohort(manifest: pd.DataFrame, label_source: str) -> Cohort:
    labels = cell_labels(manifest, label_source).dropna()
    samples = manifest["sample"].astype(str)
    types = set(manifest["true_cell_type"].dropna().astype(str))
    simulated = bool(types) and types <= set(CELL_TYPES) and samples.str.match(_SIMULATED_SAMPLE).all()
    return Cohort(
        samples=int(samples.nunique()),
        detections=len(manifest),
        labelled=len(labels),
        ctc=int((labels == 1).sum()),
        source="simulated" if simulated else "ingested",
    )


def params_hash(params: StageConfig) -> str:
    """Hash of the settings that shaped the model: its stage config, less the operational keys."""
    return hashlib.sha256(json.dumps(params.result_values(), sort_keys=True).encode()).hexdigest()


def _tag_key(key: str) -> str:
    return key.replace("dvc.md5:", "dvc.md5.").replace("dvc.raw_md5", "dvc.md5.data/raw")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "nan" if value is None else str(value)


def _ci(intervals: dict[str, Any], name: str) -> str:
    if name not in intervals:
        return ""
    return f"(95 % CI {_fmt(intervals[name]['low'])}-{_fmt(intervals[name]['high'])})"
