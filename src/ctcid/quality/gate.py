"""Run the data gate: derive the tables, validate each with its GX checkpoint, summarise.

The file-backed GX context lives in ``gx/`` at the repository root. Datasource, assets and batch
definitions are committed in ``gx/great_expectations.yml`` (added here only if missing, so a run
leaves that file untouched); suites, validation definitions and checkpoints are rebuilt from code
on every run. Validation results are kept in memory (``reports/validation.json`` and the Data
Docs are the run's record), so Data Docs always show exactly the latest run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.run_identifier import RunIdentifier
from rich.table import Table
from rich.text import Text

from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError
from ctcid.paths import VALIDATION_FILE
from ctcid.quality.crop_table import crop_array_table, crop_table, pixel_table_blocker
from ctcid.quality.expectations import TABLES, GateConfig, build_suites, positives_needed, suite_name
from ctcid.quality.offline_docs import make_offline
from ctcid.quality.summaries import field_table, label_table, missing_columns, sample_table
from ctcid.quarantine import QuarantineEntry, read_quarantine

GX_DIR = "gx"
DATASOURCE = "ctcid"
BATCH = "whole_dataframe"
DOCS_SITE = "ctcid"
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
# the summary is meant to fit one screen; the rest is in validation.json and the Data Docs
SUMMARY_ROWS = 20
_TABLE_COLUMNS = {
    "labels": ["true_label", "rule_label"],
    "samples": ["sample"],
    "fields": ["sample", "field"],
}


@dataclass(frozen=True)
class Failure:
    """One failed expectation (or a table the gate could not evaluate)."""

    table: str
    expectation: str
    column: str
    unexpected_count: int | None
    observed: str
    example_rows: list[str] = field(default_factory=list)


@dataclass
class GateReport:
    success: bool
    evaluated: int
    failures: list[Failure]
    stats: dict[str, Any]
    data_docs: Path | None

    def to_metrics(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "evaluated_expectations": self.evaluated,
            "failed_expectations": len(self.failures),
            "stats": self.stats,
            "failures": [asdict(f) for f in self.failures],
            "data_docs": str(self.data_docs) if self.data_docs else None,
        }


def run_gate(
    manifest_path: Path,
    crops_path: Path,
    quarantine_path: Path,
    reports_dir: Path,
    params: GateConfig,
    project_root: Path = Path("."),
    build_docs: bool = True,
) -> GateReport:
    """Validate the segment outputs; writes ``<reports>/validation.json`` and the Data Docs."""
    params = GateConfig.project(params)  # whatever the caller holds, the gate reads only its keys
    manifest = read_manifest(manifest_path)
    crops = open_crops(crops_path, check_shape=False)  # a wrong shape is a gate failure, reported
    tables, skipped = derive_tables(manifest, crops, read_quarantine(quarantine_path), params)
    docs_dir = reports_dir / "data_docs" if build_docs else None
    report = validate_tables(tables, skipped, params, project_root, docs_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / VALIDATION_FILE).write_text(json.dumps(report.to_metrics(), indent=2) + "\n")
    return report


def derive_tables(
    manifest: pd.DataFrame, crops: np.ndarray, quarantined: list[QuarantineEntry], params: GateConfig
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The tables GX validates, and why any could not be built (a skipped table fails the gate)."""
    tables = {"manifest": manifest, "crop_array": crop_array_table(crops, len(manifest))}
    skipped: dict[str, str] = {}
    blocker = pixel_table_blocker(crops, len(params.channels))
    if blocker:
        skipped["crops"] = blocker
    else:
        tables["crops"] = crop_table(crops, params.channels)
    builders = {
        "labels": lambda: label_table(manifest, params.split.label_source),
        "samples": lambda: sample_table(manifest),
        "fields": lambda: field_table(manifest, quarantined),
    }
    for name, build in builders.items():
        absent = missing_columns(manifest, _TABLE_COLUMNS[name])
        if absent:
            skipped[name] = f"manifest lacks {', '.join(absent)}"
        else:
            tables[name] = build()
    return tables, skipped


def validate_tables(
    tables: dict[str, pd.DataFrame],
    skipped: dict[str, str],
    params: GateConfig,
    project_root: Path,
    docs_dir: Path | None,
) -> GateReport:
    context = open_context(project_root)
    batches = {table: _batch_definition(context, table) for table in TABLES}
    if docs_dir is not None:
        _point_docs_site(context, docs_dir)
    suites = build_suites(params, len(tables["manifest"]))
    run_id = RunIdentifier(run_name="ctcid-validate", run_time=dt.datetime.now(dt.UTC))
    evaluated, failures = 0, []
    for table, frame in tables.items():
        checkpoint = _checkpoint(context, table, suites[table], batches[table], docs=docs_dir is not None)
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        # report in the suite's order (schema first), not GX's metric-resolution order
        order = {e.id: i for i, e in enumerate(checkpoint.validation_definitions[0].suite.expectations)}
        for suite_result in result.run_results.values():
            evaluated += suite_result.statistics["evaluated_expectations"]
            failed = [r for r in suite_result.results if not r.success]
            failed.sort(key=lambda r: order.get(r.expectation_config.id, 0))
            failures += [_failure(table, r, frame) for r in failed]
    for table, reason in skipped.items():
        failures.append(Failure(table, "not evaluated", "", None, reason))
    index = None
    if docs_dir is not None:
        make_offline(docs_dir)  # GX links its CSS and JS from CDNs: ship them with the site
        index = docs_dir / "index.html"
    return GateReport(not failures, evaluated, failures, gate_stats(tables, params), index)


def open_context(project_root: Path) -> Any:
    config = project_root / GX_DIR / "great_expectations.yml"
    if not config.is_file():
        # never let GX scaffold a fresh context in whatever folder we were started from
        raise CtcidError(
            f"{config}: no Great Expectations context; run from the repository root, "
            "where gx/great_expectations.yml is committed"
        )
    return gx.get_context(mode="file", project_root_dir=str(project_root))


def _batch_definition(context: Any, table: str) -> Any:
    # get-or-add, not add_or_update: the committed great_expectations.yml stays byte-identical
    try:
        source = context.data_sources.get(DATASOURCE)
    except LookupError:
        source = context.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(table)
    try:
        return asset.get_batch_definition(BATCH)
    except LookupError:
        return asset.add_batch_definition_whole_dataframe(BATCH)


def _point_docs_site(context: Any, docs_dir: Path) -> None:
    """Build the Data Docs into ``docs_dir`` (in memory only: the committed config is not rewritten)."""
    if docs_dir.exists():
        shutil.rmtree(docs_dir)  # our own output; stale pages of earlier runs would mislead
    sites = context.variables.data_docs_sites
    sites[DOCS_SITE]["store_backend"]["base_directory"] = str(docs_dir.resolve())
    context.variables.data_docs_sites = sites


def _checkpoint(context: Any, table: str, suite: Any, batch: Any, docs: bool) -> Any:
    # add_or_update cascades: checkpoint -> its validation definition -> the suite
    name = suite_name(table)
    actions = [UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if docs else []
    definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
    checkpoint = gx.Checkpoint(
        name=name, validation_definitions=[definition], actions=actions, result_format=RESULT_FORMAT
    )
    return context.checkpoints.add_or_update(checkpoint)


def _failure(table: str, result: Any, frame: pd.DataFrame) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    details = result.result or {}
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    absent = [c for c in columns if c not in frame.columns]
    error = _exception_message(result.exception_info)
    if absent:
        observed = f"column missing: {', '.join(absent)}"
    elif error:
        observed = f"error: {error}"
    elif config.type == "expect_table_columns_to_match_set":
        mismatch = details.get("details", {}).get("mismatched", {})
        missing, extra = mismatch.get("missing", []), mismatch.get("unexpected", [])
        columns = list(missing) + list(extra)
        named = (("missing", missing), ("unexpected", extra))
        observed = "; ".join(f"{what}: {', '.join(names)}" for what, names in named if names)
    else:
        if "observed_value" in details:
            observed = _short(details["observed_value"])
        else:
            observed = f"e.g. {_short(details.get('partial_unexpected_list'))}"
        rows = details.get("partial_unexpected_index_list")
        observed += f" at rows {_short(rows)}" if rows else ""
        want = _wanted(config.type, kwargs)
        observed += f"; want {want}" if want else ""
    return Failure(
        table=table,
        expectation=config.type,
        column=", ".join(str(c) for c in columns),
        unexpected_count=details.get("unexpected_count"),
        observed=observed,
        example_rows=[str(i) for i in details.get("partial_unexpected_index_list") or []],
    )


def _wanted(kind: str, kwargs: dict[str, Any]) -> str:
    """The expectation's bound in words, so the summary reads 'got X; want Y'."""
    if "column_A" in kwargs and "greater_than" in kind:
        return f"{kwargs['column_A']} {'>=' if kwargs.get('or_equal') else '>'} {kwargs['column_B']}"
    if "column_A" in kwargs:
        return f"{kwargs['column_A']} == {kwargs['column_B']}"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    bounds = [
        f"{'>' if kwargs.get('strict_min') else '>='} {_short(low)}" if low is not None else "",
        f"{'<' if kwargs.get('strict_max') else '<='} {_short(high)}" if high is not None else "",
    ]
    want = " and ".join(b for b in bounds if b)
    if "value_set" in kwargs:
        want = f"in {_short(sorted(kwargs['value_set'], key=str))}"
    elif "type_" in kwargs:
        want = kwargs["type_"]
    elif "regex" in kwargs:
        want = f"matching {kwargs['regex']}"
    mostly = kwargs.get("mostly")
    if want and mostly is not None and mostly < 1:
        want += f" in {mostly:.0%} of rows"
    return want


def _exception_message(info: Any) -> str:
    if not info:
        return ""
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message", "")).replace("Error: ", "")
    return ""


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value[:5]) + (", ..." if len(value) > 5 else "") + "]"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def gate_stats(tables: dict[str, pd.DataFrame], params: GateConfig) -> dict[str, Any]:
    """Key numbers of the run for validation.json (None where a table could not be built)."""

    def number(value: Any) -> float | int | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return round(float(value), 6) if isinstance(value, (float, np.floating)) else int(value)

    array = tables["crop_array"].iloc[0]
    stats: dict[str, Any] = {
        "n_cells": len(tables["manifest"]),
        "n_crops": int(array["n_crops"]),
        "crop_shape": [int(array[k]) for k in ("channels", "height", "width")],
        "crop_dtype": str(array["dtype"]),
        "positives_needed": positives_needed(params),
    }
    if "labels" in tables:
        labels = tables["labels"]
        stats["ctc_share"] = number(labels["label"].mean())
        stats["n_positives"] = int(labels["split_label"].sum())
        stats["n_labelled"] = int(labels["split_label"].notna().sum())
    if "samples" in tables:
        stats["n_samples"] = len(tables["samples"])
        stats["cells_per_sample_max"] = number(tables["samples"]["n_cells"].max())
    if "fields" in tables:
        fields = tables["fields"]
        stats["n_fields"] = len(fields)
        stats["n_quarantined"] = int(fields["quarantined"].sum())
        stats["quarantined_share"] = number(fields["quarantined"].mean())
    if "crops" in tables:
        crops = tables["crops"]
        stats["duplicate_crops"] = int(crops["crop_hash"].duplicated().sum())
        stats["blank_crops"] = int((crops["value_range"] < params.validate_.min_crop_range).sum())
        stats["median_range"] = {
            column.removesuffix("_range"): number(crops[column].median())
            for column in crops.columns
            if column.endswith("_range") and column != "value_range"
        }
    return stats


def failure_table(report: GateReport) -> Table:
    """The one-screen summary: each failed expectation, its column and how many rows failed."""
    view = Table(title=f"data gate: {len(report.failures)} of {report.evaluated} expectations failed")
    for name in ("table", "expectation", "column", "failed rows", "observed; wanted"):
        view.add_column(name, justify="right" if name == "failed rows" else "left", overflow="fold")
    for failure in report.failures[:SUMMARY_ROWS]:
        count = "" if failure.unexpected_count is None else str(failure.unexpected_count)
        # Text, not markup: observed values such as "[float32]" must print as they are
        cells = (failure.table, failure.expectation, failure.column, count, failure.observed)
        view.add_row(*(Text(cell) for cell in cells))
    if len(report.failures) > SUMMARY_ROWS:
        view.caption = f"... and {len(report.failures) - SUMMARY_ROWS} more in {VALIDATION_FILE}"
    return view


def verdict(report: GateReport, reports_dir: Path) -> str:
    """The gate's one line: passed, or failed (the message of ``ctcid validate``'s GateFailed)."""
    docs = f"; Data Docs: {report.data_docs}" if report.data_docs else ""
    if report.success:
        return f"data gate passed: {report.evaluated} expectations{docs}"
    return (
        f"data gate failed: {len(report.failures)} of {report.evaluated} expectations "
        f"(details in {reports_dir / VALIDATION_FILE}{docs})"
    )
