"""The params loader: good files load, and a bad one is named by its dotted key and value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ctcid.config import ConfigError, Params, SimulateParams, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_file_loads() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.channels == ["DAPI", "CEP8", "CD45"]


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, "")) == Params()


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("simulate: {read_noise: -5}", "simulate.read_noise", "-5"),
        ("simulate: {n_samples: many}", "simulate.n_samples", "'many'"),
        ("simulate: {spot_dim_prob: 1.5}", "simulate.spot_dim_prob", "1.5"),
        ("simulate: {cytoplasm_ratio: [0.5, 1.2]}", "simulate.cytoplasm_ratio", "[0.5, 1.2]"),
        ("simulate: {fields_per_sample: [0, 2]}", "simulate.fields_per_sample", "[0, 2]"),
        ("simulate: {ctc_cep8_copies: [2, 5]}", "simulate.ctc_cep8_copies", "[2, 5]"),
        ("simulate: {debris_share: 0.6, hard_negative_share: 0.5}", "simulate.debris_share", "0.6"),
        ("segment: {gaussian_ksize: 4}", "segment.gaussian_ksize", "4"),
        ("seed: -1", "seed", "-1"),
    ],
)
def test_bad_value_names_the_dotted_key_and_value(tmp_path: Path, text: str, key: str, value: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message
    assert f"{key} = {value}" in message


def test_unknown_key_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"simulate\.nsamples: unknown key \(value 3\)"):
        load_params(write(tmp_path, "simulate: {nsamples: 3}"))
    with pytest.raises(ConfigError, match=r"simulat: unknown key"):
        load_params(write(tmp_path, "simulat: {n_samples: 3}"))


@pytest.mark.parametrize(
    "key", ["leukocyte_radius", "ctc_radius", "spot_sigma", "exposure_range", "dapi_counts"]
)
def test_inverted_range_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"simulate\.{key} = \[2\.0, 1\.5\]: .*low <= high"):
        load_params(write(tmp_path, f"simulate: {{{key}: [2.0, 1.5]}}"))


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path)  # a folder
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "simulate: {n_samples: [1, 2"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(write(tmp_path, "- 1\n- 2\n"))


def test_channels_must_name_each_stain_once() -> None:
    with pytest.raises(ConfigError, match="channels"):
        parse_params({"channels": ["DAPI", "CEP8", "CEP8"]})
    assert parse_params({"channels": ["CD45", "DAPI", "CEP8"]}).channel_index("DAPI") == 1


def test_every_simulator_knob_is_documented_and_in_params_yaml() -> None:
    doc = (ROOT / "docs" / "simulator.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc, flags=re.MULTILINE))
    knobs = set(SimulateParams.model_fields)
    assert knobs <= documented, f"undocumented: {sorted(knobs - documented)}"
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["simulate"]
    assert set(shipped) == knobs
    assert SimulateParams.model_validate(shipped) == SimulateParams()  # the file states the defaults
