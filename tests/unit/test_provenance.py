"""Simulated raw data follows params.yaml: the record, its comparison, --sync and the segment check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.config.simulate import SimulateConfig
from ctcid.errors import CtcidError
from ctcid.paths import SIMULATION_FILE
from ctcid.raw.provenance import Record, raw_state
from ctcid.raw.simulate import simulate_dataset
from ctcid.raw.sync import sync_raw
from ctcid.segmentation.stage import segment_stage
from factory import small_cohort


def changed(params: Params, **simulate: object) -> Params:
    values = params.model_dump(by_alias=True)
    values["simulate"].update(simulate)
    return parse_params(values)


def state(raw: Path, params: Params) -> str:
    return raw_state(raw, SimulateConfig.project(params)).state


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    simulate_dataset(small_cohort(), tmp_path / "raw", workers=1, show_progress=False)
    return tmp_path / "raw"


def test_a_simulation_records_how_each_sample_was_drawn(raw: Path) -> None:
    record = Record.read(raw)
    assert sorted(record.samples) == ["S0000", "S0001", "S0002"] and record.base == 3
    (drawn,) = record.recipes.values()
    assert drawn["seed"] == 7 and drawn["simulate.field_size"] == 160
    assert drawn["simulate.artefacts.clumps_mean"] == 0.0  # nested sections flattened: one knob per key
    assert "simulate.workers" not in drawn and "simulate.n_samples" not in drawn  # they change no sample


def test_the_same_settings_are_current_and_a_batch_keeps_them_so(raw: Path) -> None:
    assert state(raw, small_cohort()) == "current"
    assert state(raw, changed(small_cohort(), workers=2)) == "current"
    simulate_dataset(small_cohort(), raw, n_samples=2, first_sample=3, workers=1, show_progress=False)
    assert state(raw, small_cohort()) == "current"
    assert Record.read(raw).base == 3


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"gain": 3.0}, "simulate.gain: 2.0 -> 3.0"),
        ({"artefacts": {"clumps_mean": 1.5}}, "simulate.artefacts.clumps_mean: 0.0 -> 1.5"),
        ({"n_samples": 4}, "simulate.n_samples: 3 -> 4"),
        ({"n_samples": 2}, "simulate.n_samples: 3 -> 2"),
    ],
)
def test_other_settings_are_stale_and_named(raw: Path, change: dict[str, object], named: str) -> None:
    found = raw_state(raw, SimulateConfig.project(changed(small_cohort(), **change)))
    assert found.state == "stale"
    assert named in found.differences
    assert named in found.message(raw) and "make run" in found.message(raw)


def test_a_folder_of_appended_batches_alone_has_no_count_to_follow(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    simulate_dataset(small_cohort(), raw, n_samples=2, first_sample=20, workers=1, show_progress=False)
    assert state(raw, small_cohort()) == "current"
    assert state(raw, changed(small_cohort(), gain=3.0)) == "stale"  # how they were drawn still counts


def test_another_seed_is_stale(raw: Path) -> None:
    other = parse_params({**small_cohort().model_dump(by_alias=True), "seed": 8})
    assert raw_state(raw, SimulateConfig.project(other)).differences == ["seed: 7 -> 8"]


def test_ingested_samples_beside_stale_ones_are_never_overwritten(raw: Path) -> None:
    shutil.copytree(raw / "S0000", raw / "LAB-17")  # as 'ctcid ingest' leaves it: no record
    hard = changed(small_cohort(), artefacts={"clumps_mean": 1.0})
    found = raw_state(raw, SimulateConfig.project(hard))
    assert found.state == "mixed" and found.ingested == ["LAB-17"]
    before = {p: p.read_bytes() for p in (raw / "LAB-17").iterdir()}
    with pytest.raises(CtcidError, match="LAB-17.*never overwritten.*ctcid ingest"):
        sync_raw(raw, hard, show_progress=False)
    assert {p: p.read_bytes() for p in (raw / "LAB-17").iterdir()} == before


def test_data_with_no_record_is_not_compared(raw: Path) -> None:
    (raw / SIMULATION_FILE).unlink()
    assert state(raw, changed(small_cohort(), gain=3.0)) == "unrecorded"
    message, made = sync_raw(raw, changed(small_cohort(), gain=3.0), show_progress=False)
    assert not made and "left as they are" in message


def test_sync_simulates_missing_data_keeps_current_and_remakes_stale(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    message, made = sync_raw(raw, small_cohort(), show_progress=False)
    assert len(made) == 3 and message.startswith("simulated")
    stamp = (raw / "S0000" / "annotations.csv").stat().st_mtime_ns
    message, made = sync_raw(raw, small_cohort(), show_progress=False)
    assert not made and "is current" in message
    assert (raw / "S0000" / "annotations.csv").stat().st_mtime_ns == stamp

    hard = changed(small_cohort(n_samples=2), artefacts={"clumps_mean": 1.0, "dim_nucleus_prob": 0.2})
    message, made = sync_raw(raw, hard, show_progress=False)
    assert "re-simulated" in message and "simulate.artefacts.clumps_mean: 0.0 -> 1.0" in message
    assert sorted(p.name for p in raw.iterdir() if p.is_dir()) == ["S0000", "S0001"]
    assert (raw / "S0000" / "artefacts.csv").is_file()  # the hard cohort, not the old one
    assert state(raw, hard) == "current"


def test_the_segment_stage_refuses_stale_raw_data(raw: Path, tmp_path: Path) -> None:
    hard = changed(small_cohort(), artefacts={"clumps_mean": 1.0})
    with pytest.raises(CtcidError, match=r"simulate.artefacts.clumps_mean: 0.0 -> 1.0.*make run"):
        segment_stage(raw, tmp_path / "segment", tmp_path / "reports", hard, show_progress=False)
    assert not (tmp_path / "segment").exists()


def test_cli_simulate_sync_says_what_it_did(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("seed: 7\nsimulate: {n_samples: 2, field_size: 160, fields_per_sample: [1, 1]}\n")
    raw = tmp_path / "raw"
    command = ["simulate", "--sync", "--out", str(raw), "--params", str(params)]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and "is current" in again.output
    params.write_text("seed: 8\nsimulate: {n_samples: 2, field_size: 160, fields_per_sample: [1, 1]}\n")
    remade = CliRunner().invoke(app, command)
    assert remade.exit_code == 0 and "seed: 7 -> 8" in remade.output


def test_cli_simulate_sync_takes_no_sample_range(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["simulate", "--sync", "--samples", "2", "--out", str(tmp_path / "raw")])
    assert done.exit_code == 1
    said = " ".join(done.output.split())  # rich wraps at the terminal's width
    assert "--sync simulates simulate.n_samples from S0000: drop --samples, --first-sample" in said
    assert not (tmp_path / "raw").exists()


def test_a_broken_record_names_itself_and_what_to_do(raw: Path) -> None:
    (raw / SIMULATION_FILE).write_text("{not json")
    with pytest.raises(CtcidError, match=r"simulation.json: unreadable record .*re-simulate"):
        sync_raw(raw, small_cohort(), show_progress=False)
