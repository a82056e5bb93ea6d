"""The Great Expectations gate passes good segment output and fails, naming the expectation and the
column, on each kind of bad data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ctcid import cli
from ctcid.config.base import ConfigError
from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.errors import CtcidError
from ctcid.quality.gate import GateReport, run_gate
from ctcid.quarantine import QuarantineEntry, write_quarantine

REPO = Path(__file__).resolve().parents[2]
Data = tuple[pd.DataFrame, np.ndarray, list[QuarantineEntry]]


def write_inputs(
    root: Path, manifest: pd.DataFrame, crops: np.ndarray, quarantined: list[QuarantineEntry]
) -> None:
    (root / "data" / "segment").mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(root / "data" / "segment" / "manifest.parquet")
    np.save(root / "data" / "segment" / "crops.npy", crops)
    write_quarantine(root / "reports" / "quarantine.csv", quarantined)


def gate(root: Path, params: Params, gx_project: Path, build_docs: bool = False) -> GateReport:
    return run_gate(
        root / "data" / "segment" / "manifest.parquet",
        root / "data" / "segment" / "crops.npy",
        root / "reports" / "quarantine.csv",
        root / "reports",
        params,
        project_root=gx_project,
        build_docs=build_docs,
    )


ONE_QUARANTINED = [QuarantineEntry("data/raw/S10/f000.tif", "segment", "not a TIFF")]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, good_data, gate_params, gx_project) -> tuple[GateReport, Path]:
    root = tmp_path_factory.mktemp("good")
    manifest, crops = good_data
    # through parquet and .npy, as segment writes them
    write_inputs(root, manifest, crops, ONE_QUARANTINED)
    return gate(root, gate_params, gx_project, build_docs=True), root


def test_good_data_passes(good_run):
    report, root = good_run
    assert report.failures == []
    assert report.success and report.evaluated > 90
    metrics = json.loads((root / "reports" / "validation.json").read_text())
    assert metrics["success"] is True and metrics["failed_expectations"] == 0
    assert metrics["stats"]["ctc_share"] == pytest.approx(0.1, abs=0.01)
    assert metrics["stats"]["n_quarantined"] == 1 and metrics["stats"]["n_fields"] == 21
    assert (root / "reports" / "data_docs" / "index.html").is_file()
    assert report.data_docs == root / "reports" / "data_docs" / "index.html"


def test_run_leaves_the_committed_gx_config_unchanged(good_run, gx_project):
    # the datasource is committed; a run must not rewrite great_expectations.yml (no dirty tree)
    committed = (REPO / "gx" / "great_expectations.yml").read_text()
    assert (gx_project / "gx" / "great_expectations.yml").read_text() == committed


def _set(column: str, rows: slice | list[int], value) -> Callable[[Data], Data]:
    def mutate(data: Data) -> Data:
        manifest, crops, quarantined = data
        manifest.loc[manifest.index[rows], column] = value
        return manifest, crops, quarantined

    return mutate


def _drop_area(data: Data) -> Data:
    return data[0].drop(columns="area"), data[1], data[2]


def _duplicate_id(data: Data) -> Data:
    manifest = data[0]
    manifest.loc[9, "cell_uid"] = manifest.loc[8, "cell_uid"]
    return manifest, data[1], data[2]


def _duplicate_crop(data: Data) -> Data:
    crops = data[1]
    crops[12] = crops[11]
    return data[0], crops, data[2]


def _blank_crops(data: Data) -> Data:
    crops = data[1]
    crops[20:23] = 0
    return data[0], crops, data[2]


def _saturated_crop(data: Data) -> Data:
    crops = data[1]
    crops[30, :, :10, :] = 65535
    return data[0], crops, data[2]


def _small_crops(data: Data) -> Data:
    return data[0], np.ascontiguousarray(data[1][:, :, 4:-4, 4:-4]), data[2]


def _flat_crops(data: Data) -> Data:
    return data[0], np.ascontiguousarray(data[1][:, 0]), data[2]


def _many_quarantined(data: Data) -> Data:
    bad = [QuarantineEntry(f"data/raw/S{i}/f000.tif", "segment", "unreadable") for i in range(10, 20)]
    return data[0], data[1], bad


def _few_positives(data: Data) -> Data:
    manifest = data[0]
    ctc = manifest.index[manifest["true_label"].fillna(0).astype(int) == 1]
    manifest.loc[ctc[4:], "true_label"] = 0
    return manifest, data[1], data[2]


# fault -> (mutation, failed expectation, column named in the summary, unexpected rows or None)
FAULTS = {
    "missing column": (_drop_area, "expect_table_columns_to_match_set", "area", None),
    "nulls": (_set("solidity", [3, 4, 5], np.nan), "expect_column_values_to_not_be_null", "solidity", 3),
    "unknown label": (_set("rule_label", [7], 2), "expect_column_values_to_be_in_set", "rule_label", 1),
    "duplicate ids": (_duplicate_id, "expect_column_values_to_be_unique", "cell_uid", 2),
    "duplicate crops": (_duplicate_crop, "expect_column_values_to_be_unique", "crop_hash", 2),
    "ctc share too high": (
        _set("true_label", slice(0, 100), 1), "expect_column_mean_to_be_between", "label", None
    ),
    "too few positives": (_few_positives, "expect_column_sum_to_be_between", "split_label", None),
    "blank crops": (_blank_crops, "expect_column_values_to_be_between", "value_range", 3),
    "saturated crop": (_saturated_crop, "expect_column_values_to_be_between", "saturated_share", 1),
    "wrong crop shape": (_small_crops, "expect_column_values_to_be_in_set", "height", 1),
    "crops not 4-D": (_flat_crops, "expect_column_values_to_be_in_set", "ndim", 1),
    "box outside field": (
        _set("x1", [5], 600), "expect_column_pair_values_a_to_be_greater_than_b", "field_width, x1", 1
    ),
    "too many quarantined": (_many_quarantined, "expect_column_mean_to_be_between", "quarantined", None),
    "missing scale": (
        _set("scale_cd45", [3], np.nan), "expect_column_values_to_not_be_null", "scale_cd45", 1
    ),
    "zero scale": (_set("scale_dapi", [4, 5], 0.0), "expect_column_values_to_be_between", "scale_dapi", 2),
    "infinite background": (
        _set("background_cep8", [6], np.inf), "expect_column_values_to_be_between", "background_cep8", 1
    ),
    "missing site": (_set("site", [7], None), "expect_column_values_to_not_be_null", "site", 1),
    "bad site name": (_set("site", [8, 9], "lab 2"), "expect_column_values_to_match_regex", "site", 2),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_gate_fails_on_fault(fault, tmp_path, good_data, gate_params, gx_project):
    mutate, expectation, column, unexpected = FAULTS[fault]
    manifest, crops = good_data
    manifest, crops, quarantined = mutate((manifest.copy(), crops.copy(), list(ONE_QUARANTINED)))
    write_inputs(tmp_path, manifest, crops, quarantined)

    report = gate(tmp_path, gate_params, gx_project)

    assert not report.success
    named = [f for f in report.failures if f.expectation == expectation and column in f.column]
    assert named, f"no {expectation} on {column} in {report.failures}"
    if unexpected is not None:
        assert named[0].unexpected_count == unexpected
    metrics = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert metrics["success"] is False and metrics["failed_expectations"] == len(report.failures)


def test_summary_counts_only_real_faults(tmp_path, good_data, gate_params, gx_project):
    # one fault, one failure: the good fixture trips nothing else
    manifest, crops = good_data
    manifest = manifest.copy()
    manifest.loc[3, "solidity"] = 1.7
    write_inputs(tmp_path, manifest, crops, ONE_QUARANTINED)
    report = gate(tmp_path, gate_params, gx_project)
    assert [(f.expectation, f.column, f.unexpected_count) for f in report.failures] == [
        ("expect_column_values_to_be_between", "solidity", 1)
    ]
    assert report.failures[0].example_rows == ["3"]


def test_missing_crops_is_an_error_not_a_traceback(tmp_path, good_data, gate_params, gx_project):
    write_inputs(tmp_path, good_data[0], good_data[1], [])
    (tmp_path / "data" / "segment" / "crops.npy").unlink()
    with pytest.raises(CtcidError, match="run 'ctcid segment'"):
        gate(tmp_path, gate_params, gx_project)


@pytest.fixture
def cli_project(tmp_path, gx_project, monkeypatch) -> Path:
    (tmp_path / "gx").symlink_to(gx_project / "gx")
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.console, "width", 200)  # keep table cells on one line for the asserts
    return tmp_path


def test_cli_passes_good_data(cli_project, good_data):
    write_inputs(cli_project, good_data[0], good_data[1], ONE_QUARANTINED)
    result = CliRunner().invoke(cli.app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "data gate passed" in result.output
    assert "reports/data_docs/index.html" in result.output
    assert json.loads(Path("reports/validation.json").read_text())["success"] is True


def test_cli_fails_with_a_table_naming_the_expectation(cli_project, good_data):
    _, crops, _ = _blank_crops((good_data[0], good_data[1].copy(), []))
    write_inputs(cli_project, good_data[0], crops, ONE_QUARANTINED)
    result = CliRunner().invoke(cli.app, ["validate"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "expect_column_values_to_be_between" in result.output and "value_range" in result.output
    assert "data gate failed" in result.output


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ctc_share": [0.3, 0.1]}, "low <= high"),
        ({"ctc_share": [0.1, 1.5]}, "within [0, 1]"),
        ({"cells_per_sample": [-1, 10]}, "cannot be negative"),
        ({"max_cep8_spots": 2}, "validate.max_cep8_spots"),
        ({"min_marker_range_share": 1.2}, "validate.min_marker_range_share"),
        ({"min_dynamic_range": 70000}, "validate.min_dynamic_range"),
    ],
)
def test_validate_params_are_range_checked(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_params({"validate": section})


def test_the_hard_cohort_passes_the_gate(tmp_path, gx_project):
    """Clumps, haze, fragments and look-alikes are hard, not bad data: the gate lets them through."""
    from ctcid.config.loader import merge_overlay, read_raw
    from ctcid.raw.simulate import simulate_dataset
    from ctcid.segmentation.stage import run_segment

    overlay = merge_overlay(read_raw(REPO / "configs" / "hard.yaml"), {"simulate": {"ctc_burden_mean": 12.0}})
    params = parse_params(merge_overlay(read_raw(REPO / "params.yaml"), overlay))
    raw = tmp_path / "raw"
    simulate_dataset(params, raw, n_samples=10, workers=2, show_progress=False)
    run_segment(raw, tmp_path / "data" / "segment", tmp_path / "reports", params.segment, params.channels,
                show_progress=False)
    report = gate(tmp_path, params, gx_project)
    assert report.failures == [] and report.success
