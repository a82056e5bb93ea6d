"""The params loader: good files load, and a bad one is named by its dotted key and value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ctcid.cli import app, read_params
from ctcid.config import loader
from ctcid.config.base import ConfigError
from ctcid.config.external import ExternalCohort, Repeatability
from ctcid.config.loader import ENVIRONMENT_OVERRIDES, load_params, parse_params, with_environment
from ctcid.config.params import Params
from ctcid.config.simulate import SimulateParams

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


# --- environment overrides of the infrastructure keys (docs/configuration.md) ---------------------

FILE_STORES = (
    "mlflow: {tracking_uri: 'sqlite:///file.db', artifact_location: mlruns, experiment: lab}\n"
    "tune: {storage: 'sqlite:///file-optuna.db', n_trials: 3}\n"
)
TEAM = {
    "CTCID_MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
    "CTCID_MLFLOW_ARTIFACT_LOCATION": "s3://ctcid-mlflow/artifacts",
    "CTCID_TUNE_STORAGE": "postgresql+psycopg://ctcid@db.internal:5432/ctcid_optuna",
}


def test_environment_overrides_exactly_the_three_infrastructure_keys(tmp_path: Path) -> None:
    assert set(ENVIRONMENT_OVERRIDES) == set(TEAM)
    params = load_params(write(tmp_path, FILE_STORES), {**TEAM, "CTCID_UNRELATED": "x", "PATH": "/bin"})
    assert params.mlflow.tracking_uri == TEAM["CTCID_MLFLOW_TRACKING_URI"]
    assert params.mlflow.artifact_location == TEAM["CTCID_MLFLOW_ARTIFACT_LOCATION"]
    assert params.tune.storage == TEAM["CTCID_TUNE_STORAGE"]
    # the rest of the file, and of the same sections, stays as written
    assert params.mlflow.experiment == "lab"
    assert params.tune.n_trials == 3
    assert params.model_dump(exclude={"mlflow", "tune"}) == Params().model_dump(exclude={"mlflow", "tune"})


def test_one_override_alone_and_surrounding_blanks(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, FILE_STORES), {"CTCID_TUNE_STORAGE": "  postgresql+psycopg://db/x\n"})
    assert params.tune.storage == "postgresql+psycopg://db/x"
    assert params.mlflow.tracking_uri == "sqlite:///file.db"


def test_an_override_fills_a_section_the_file_does_not_have(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, ""), {"CTCID_MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})
    assert params.mlflow.tracking_uri == "http://mlflow.internal:5000"
    assert params.mlflow.experiment == Params().mlflow.experiment


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_an_empty_variable_is_ignored(tmp_path: Path, blank: str) -> None:
    path = write(tmp_path, FILE_STORES)
    params = load_params(path, dict.fromkeys(TEAM, blank))
    assert params == load_params(path, {})
    assert params.mlflow.tracking_uri == "sqlite:///file.db"
    assert params.tune.storage == "sqlite:///file-optuna.db"


def test_an_empty_environ_reads_the_file_alone_and_none_reads_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TEAM.items():
        monkeypatch.setenv(name, value)
    path = write(tmp_path, FILE_STORES)
    alone = load_params(path, {})
    assert alone.mlflow.tracking_uri == "sqlite:///file.db"
    assert alone.mlflow.artifact_location == "mlruns"
    assert alone.tune.storage == "sqlite:///file-optuna.db"
    assert load_params(path).mlflow.tracking_uri == TEAM["CTCID_MLFLOW_TRACKING_URI"]


def test_with_environment_leaves_the_file_contents_alone() -> None:
    raw = {"mlflow": {"tracking_uri": "sqlite:///file.db"}, "seed": 1}
    merged, used = with_environment(raw, {"CTCID_MLFLOW_TRACKING_URI": "http://x:5000"})
    assert used == ["CTCID_MLFLOW_TRACKING_URI"]
    assert merged == {"mlflow": {"tracking_uri": "http://x:5000"}, "seed": 1}
    assert raw == {"mlflow": {"tracking_uri": "sqlite:///file.db"}, "seed": 1}


def test_an_override_that_fails_validation_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The three real keys are free-form non-empty strings, and a blank variable is ignored, so no
    # value of them can fail validation today; the mechanism is checked with a numeric key mapped
    # the same way.
    monkeypatch.setitem(loader.ENVIRONMENT_OVERRIDES, "CTCID_TUNE_N_TRIALS", ("tune", "n_trials"))
    path = write(tmp_path, FILE_STORES)
    with pytest.raises(ConfigError) as error:
        load_params(path, {"CTCID_TUNE_N_TRIALS": "many"})
    message = str(error.value)
    assert f"{path} with CTCID_TUNE_N_TRIALS from the environment: invalid configuration" in message
    assert "tune.n_trials = 'many'" in message
    assert load_params(path, {"CTCID_TUNE_N_TRIALS": "7"}).tune.n_trials == 7


def test_a_bad_file_with_overrides_says_which_variables_were_applied(tmp_path: Path) -> None:
    # a section that is no mapping cannot take the override; the error still names the variable
    path = write(tmp_path, "mlflow: oops\n")
    with pytest.raises(ConfigError) as error:
        load_params(path, {"CTCID_MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})
    message = str(error.value)
    assert "with CTCID_MLFLOW_TRACKING_URI from the environment" in message
    assert "mlflow = 'oops'" in message
    assert "http://mlflow.internal:5000" not in message  # the value (a secret) is not echoed
    with pytest.raises(ConfigError) as plain:
        load_params(path, {})
    assert "from the environment" not in str(plain.value)


def test_show_params_never_prints_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_STORES)
    secret = {name: f"{value}/secret-{name.lower()}" for name, value in TEAM.items()}
    result = CliRunner().invoke(app, ["show-params", "-p", str(path)], env=secret)
    assert result.exit_code == 0, result.output
    for value in secret.values():
        assert value not in result.output
    shown = yaml.safe_load(result.output)
    assert shown["mlflow"]["tracking_uri"] == "sqlite:///file.db"
    assert shown["tune"]["storage"] == "sqlite:///file-optuna.db"
    assert load_params(path, {}) == parse_params(shown)  # what DVC would read as params.yaml
    # every other command reads the same file with the overrides applied
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secret.items():
            patch.setenv(name, value)
        assert read_params(path).mlflow.tracking_uri == secret["CTCID_MLFLOW_TRACKING_URI"]


def test_team_profile_validates_and_keeps_secrets_out() -> None:
    path = ROOT / "configs" / "team.yaml"
    result = CliRunner().invoke(app, ["show-params", "-p", str(ROOT / "params.yaml"), "--over", str(path)])
    assert result.exit_code == 0, result.output
    team = parse_params(yaml.safe_load(result.output), "team profile")
    assert team.external.cohorts == load_params(ROOT / "params.yaml", {}).external.cohorts  # kept
    assert load_params(path, {}).tune.storage == team.tune.storage  # the file alone still validates
    assert team.mlflow.tracking_uri.startswith("http://")
    assert team.tune.storage.startswith("postgresql+psycopg://")
    assert team.serving.host == "0.0.0.0"
    # no password in the file: the tune section is a DVC param, written into dvc.lock
    user = team.tune.storage.split("://", 1)[1].split("@", 1)[0]
    assert ":" not in user, team.tune.storage


def test_urls_are_shown_and_stored_without_their_password() -> None:
    from ctcid.config.base import redact_url

    hidden = "postgresql+psycopg://tuner:***@db:5432/optuna"
    assert redact_url("postgresql+psycopg://tuner:s3cret@db:5432/optuna") == hidden
    assert redact_url("postgresql+psycopg://tuner@db/optuna") == "postgresql+psycopg://tuner@db/optuna"
    assert redact_url("https://ci:t0ken@mlflow.internal:5000") == "https://ci:***@mlflow.internal:5000"
    assert redact_url("sqlite:///optuna.db") == "sqlite:///optuna.db"


def _with_cohort(cohort: dict) -> dict:
    return {"seed": 42, "external": {"cohorts": {"site_b": cohort}}}


def test_a_simulated_cohort_gets_its_own_seed_and_simulator_overrides() -> None:
    params = parse_params(_with_cohort({"seed": 7, "simulate": {"n_samples": 3, "read_noise": 40.0}}))
    shifted = params.for_cohort("site_b")
    assert (shifted.seed, shifted.simulate.n_samples, shifted.simulate.read_noise) == (7, 3, 40.0)
    # everything else, and the training params themselves, stay as they were
    assert shifted.simulate.gain == params.simulate.gain and params.simulate.read_noise == 12.0
    assert params.seed == 42 and params.external.cohorts["site_b"].simulated


@pytest.mark.parametrize(
    ("cohort", "message"),
    [
        ({"seed": 42}, "external.cohorts.site_b.seed must differ from seed (42)"),
        ({"seed": 7, "simulate": {"read_noise": -1.0}}, "external.cohorts.site_b.simulate.read_noise = -1.0"),
        ({"seed": 7, "simulate": {"lamp": 1}}, "external.cohorts.site_b.simulate.lamp"),
        ({"seed": 7, "folder": "data/labs/b"}, "either seed"),
        ({}, "either seed"),
        ({"folder": "data/labs/b", "simulate": {"gain": 3.0}}, "simulated cohorts only"),
    ],
)
def test_a_bad_cohort_is_named_with_its_key(cohort: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(_with_cohort(cohort))


def test_a_cohort_name_must_make_a_folder_name() -> None:
    with pytest.raises(ConfigError, match="cohort name '../b'"):
        parse_params({"external": {"cohorts": {"../b": {"seed": 1}}}})


def test_a_lab_folder_cohort_keeps_the_training_params() -> None:
    params = parse_params(_with_cohort({"folder": "data/labs/b", "description": "site B"}))
    assert params.for_cohort("site_b") == params and not params.external.cohorts["site_b"].simulated


def test_an_overlay_changes_only_its_keys_and_lists_replace() -> None:
    base = {"train": {"epochs": 5, "backbones": ["vgg16", "resnet18"]}, "split": {"n_folds": 5}}
    merged = loader.merge_overlay(base, {"train": {"backbones": ["alexnet"]}, "simulate": {"sites": 3}})
    assert merged == {
        "train": {"epochs": 5, "backbones": ["alexnet"]},
        "split": {"n_folds": 5},
        "simulate": {"sites": 3},
    }
    assert base["train"]["backbones"] == ["vgg16", "resnet18"]  # the base is not touched


def test_show_params_over_keeps_the_base_files_cohorts_and_applies_the_multisite_profile() -> None:
    result = CliRunner().invoke(
        app, ["show-params", "-p", str(ROOT / "params.yaml"), "--over", str(ROOT / "configs/multisite.yaml")]
    )
    assert result.exit_code == 0, result.output
    shown = parse_params(yaml.safe_load(result.output))
    base = load_params(ROOT / "params.yaml", {})
    profile = (shown.simulate.sites, shown.split.cv, shown.tune.objective)
    assert profile == (4, "sites", "worst_fold_specificity")
    assert shown.external.cohorts == base.external.cohorts and shown.tune.enqueue == base.tune.enqueue
    bad = CliRunner().invoke(app, ["show-params", "--over", "/nonexistent/overlay.yaml"])
    assert bad.exit_code != 0 and "overlay.yaml" in bad.output


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"train": {"site_shift": {"spot_dimming": [0.5, 1.2]}}},
            r"train\.site_shift\.spot_dimming = .*within \[0, 1\]",
        ),
        (
            {"train": {"site_shift": {"blur_sigma": [1.0, 0.5]}}},
            r"train\.site_shift\.blur_sigma = .*low <= high",
        ),
        (
            {"simulate": {"site_optics": {"gain": [-1.0, 2.0]}}},
            r"simulate\.site_optics\.gain = .*not be negative",
        ),
        ({"split": {"cv": "labs"}}, r"split\.cv = 'labs'"),
    ],
)
def test_site_settings_out_of_range_name_their_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def _cohorts(**cohorts: dict) -> dict:
    return {"seed": 42, "simulate": {"n_samples": 10}, "external": {"cohorts": cohorts}}


def test_a_sealed_cohort_is_never_guarded_and_an_open_one_is_unless_told() -> None:
    params = parse_params(
        _cohorts(
            a={"seed": 1},
            vault={"seed": 2, "sealed": True},
            b={"seed": 3, "guard": False},
            lab={"folder": "data/labs/x", "sealed": True, "guard": False},
        )
    )
    external = params.external
    assert {name: c.guarded for name, c in external.cohorts.items()} == {
        "a": True,
        "vault": False,
        "b": False,
        "lab": False,
    }
    assert external.open_names() == ["a", "b"] and external.sealed_names() == ["vault", "lab"]
    assert ExternalCohort(seed=5).guard is None and ExternalCohort(seed=5, guard=True).guarded


@pytest.mark.parametrize(
    ("cohorts", "message"),
    [
        (
            {"vault": {"seed": 2, "sealed": True, "guard": True}},
            "a sealed cohort cannot be the promotion gate's guard: drop 'guard' or set it false",
        ),
        (
            {"a": {"seed": 2}, "vault": {"seed": 2, "sealed": True}},
            "external.cohorts.vault is sealed but shares its seed (2) with external.cohorts.a",
        ),
        (
            {"vault": {"seed": 2, "sealed": True}, "b": {"seed": 2, "sealed": True}},
            "external.cohorts.vault is sealed but shares its seed (2) with external.cohorts.b",
        ),
        ({"vault": {"seed": 42, "sealed": True}}, "external.cohorts.vault.seed must differ from seed (42)"),
    ],
)
def test_a_sealed_cohort_draws_patients_of_its_own_and_never_guards(cohorts: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(_cohorts(**cohorts))


def test_open_cohorts_may_share_a_seed() -> None:
    # two views of the same patients (another microscope, say) are fine while neither is sealed
    params = parse_params(_cohorts(a={"seed": 2}, b={"seed": 2, "simulate": {"read_noise": 30.0}}))
    assert params.external.sealed_names() == []


def test_repeatability_of_a_simulated_cohort() -> None:
    params = parse_params(_cohorts(a={"seed": 2, "repeatability": {"specimens": 4, "images": 3}}))
    repeats = params.external.cohorts["a"].repeatability
    assert repeats is not None and (repeats.specimens, repeats.images) == (4, 3)
    expected = ExternalCohort(seed=2, repeatability=Repeatability(specimens=4, images=3))
    assert params.external.cohorts["a"] == expected
    assert parse_params(_cohorts(a={"seed": 2})).external.cohorts["a"].repeatability is None


@pytest.mark.parametrize(
    ("cohort", "message"),
    [
        (
            {"folder": "data/labs/x", "repeatability": {"specimens": 2, "images": 2}},
            "repeatability applies to simulated cohorts only: a lab's re-imaged slides would need "
            "their own layout",
        ),
        ({"seed": 2, "repeatability": {"specimens": 1, "images": 2}}, "specimens"),
        ({"seed": 2, "repeatability": {"specimens": 2, "images": 1}}, "images"),
        ({"seed": 2, "repeatability": {"specimens": 2, "images": 11}}, "images"),
        ({"seed": 2, "repeatability": {"specimens": 2}}, "images"),
        ({"seed": 2, "repeatability": {"specimens": 2, "images": 2, "fields": 3}}, "fields"),
        (
            {"seed": 2, "simulate": {"n_samples": 3}, "repeatability": {"specimens": 4, "images": 2}},
            "external.cohorts.a.repeatability.specimens = 4: more than the cohort's 3 samples",
        ),
        # no override: the cohort has the training cohort's 10 samples
        (
            {"seed": 2, "repeatability": {"specimens": 11, "images": 2}},
            "external.cohorts.a.repeatability.specimens = 11: more than the cohort's 10 samples",
        ),
    ],
)
def test_bad_repeatability_is_refused_with_its_reason(cohort: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(_cohorts(a=cohort))
