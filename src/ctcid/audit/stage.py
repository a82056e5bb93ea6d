"""``ctcid audit``: the sealed cohorts of ``external.cohorts``, scored by every model and the rule.

A sealed cohort (``sealed: true``) is prepared like any external cohort but read by nothing that
decides: the promotion gate skips it (it cannot be a guard), tuning and model selection read no
external cohort, and ``ctcid external`` leaves it out so that its numbers are not in front of
whoever tunes the defaults. This step, the last of the pipeline, is the only reader: it writes
``reports/audit.json`` and ``reports/audit.md`` (the same tables as external.md, stamped with the
commit that made them) and ``reports/audit/<cohort>/``. Its numbers are the clean estimate of
what a lab would see; nothing downstream reads them (tests/audit checks that).
"""

from __future__ import annotations

from pathlib import Path

from ctcid.config.external import ExternalParams
from ctcid.config.mlflow import MlflowParams
from ctcid.config.stage import StageConfig, view
from ctcid.config.train import TrainParams
from ctcid.errors import CtcidError
from ctcid.external.assess import CohortResult
from ctcid.external.report import ReportFiles, write_reports
from ctcid.external.stage import score_cohorts
from ctcid.paths import AUDIT_FILE, AUDIT_SUMMARY_FILE, MANIFEST_FILE
from ctcid.tracking import run_stamp

AUDIT_REPORTS = ReportFiles("Audit: the sealed cohorts", AUDIT_FILE, AUDIT_SUMMARY_FILE, "audit")


class AuditConfig(StageConfig):
    """What the audit reads: the cohorts (it scores the sealed ones) and the models to score."""

    seed: int
    channels: list[str]
    train: view(TrainParams, "backbones", "device", "target_sensitivity")  # type: ignore[valid-type]
    external: ExternalParams
    mlflow: MlflowParams  # the champion: <model_name>@champion


def audit(
    params: AuditConfig,
    models_dir: Path,
    reports_dir: Path,
    external_dir: Path,
    split_path: Path,
    reference_path: Path,
    manifest_path: Path = MANIFEST_FILE,
    show_progress: bool = True,
) -> list[CohortResult]:
    """Score every sealed cohort; write audit.json, audit.md and audit/<cohort>/."""
    params = AuditConfig.project(params)  # only its keys, whatever the caller holds
    names = params.external.sealed_names()
    if not names:
        raise CtcidError(
            "external.cohorts has no sealed cohort: add one with 'sealed: true' and its own seed "
            "(docs/evaluation.md#what-each-cohort-may-influence)"
        )
    results = score_cohorts(
        params,  # type: ignore[arg-type]  # the same keys as the external stage's config
        names,
        models_dir,
        external_dir,
        split_path,
        reference_path,
        manifest_path,
        show_progress,
    )
    write_reports(results, reports_dir, params, AUDIT_REPORTS, stamp=run_stamp())  # type: ignore[arg-type]
    return results
