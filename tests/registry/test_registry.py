"""Register, promote, refuse, force and roll back through a real MLflow server over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from support import BACKBONE, Candidate, MlflowServer, free_port, server_params
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.config.params import Params
from ctcid.contracts import open_crops
from ctcid.errors import CtcidError, RegistryError, TrackingUnavailable
from ctcid.model.predict import load_model, score_crops
from ctcid.paths import MODEL_FILE, PROMOTION_FILE, StageInputs
from ctcid.registry.promote import promote, rollback
from ctcid.registry.register import register_selected
from ctcid.registry.store import Registry
from ctcid.registry_client import CHALLENGER, CHAMPION

runner = CliRunner()


def register(candidate: Candidate, params: Params, inputs: StageInputs):
    return register_selected(params, inputs, candidate.models, candidate.reports)


def aliases(params: Params) -> dict[str, str | None]:
    registry = Registry(params.mlflow)
    return {a: (None if (v := registry.alias(a)) is None else str(v.version)) for a in (CHAMPION, CHALLENGER)}


def write_params(params: Params, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


def test_a_registered_version_loads_in_a_fresh_process_and_scores_like_predict(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, stage_inputs: StageInputs,
    model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    copy = good_model.copy_to(tmp_path)
    crops = np.asarray(open_crops(stage_inputs.crops)[:20])
    expected = score_crops(load_model(copy.models / BACKBONE / MODEL_FILE), crops)
    done = register(copy, params, stage_inputs)
    assert (done.version, done.reused) == ("1", False)
    shutil_rmtree(copy.models)  # the loading process never sees the training files
    np.save(tmp_path / "crops.npy", crops)
    script = textwrap.dedent(
        f"""
        import mlflow, numpy as np
        mlflow.set_tracking_uri({mlflow_server.uri!r}); mlflow.set_registry_uri({mlflow_server.uri!r})
        model = mlflow.pyfunc.load_model("models:/{model_name}@challenger")
        out = model.predict(np.load("crops.npy").astype(np.float32))
        np.save("scores.npy", out["ctc_probability"].to_numpy())
        print(list(out.columns))
        """
    )
    done_process = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done_process.returncode == 0, done_process.stderr[-3000:]
    assert "ctc_probability" in done_process.stdout and "'ctc'" in done_process.stdout
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected, rtol=0, atol=1e-6)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_a_version_carries_its_metrics_lineage_card_and_link_to_the_run(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, stage_inputs: StageInputs,
    model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    copy = good_model.copy_to(tmp_path)
    done = register(copy, params, stage_inputs)
    registry = Registry(params.mlflow)
    version = registry.version(done.version)
    tags, reported = version.tags, copy.selected_metrics()
    run_id = json.loads((copy.models / BACKBONE / "run.json").read_text())["run_id"]
    assert version.run_id == run_id == tags["training_run_id"]
    assert float(tags["test.auc"]) == pytest.approx(reported["operating"]["auc"], abs=5e-4)
    assert float(tags["test.sensitivity"]) == pytest.approx(reported["operating"]["sensitivity"], abs=5e-4)
    assert tags["test.auc.ci95"].startswith("[") and "rule.sensitivity" in tags
    threshold = load_model(copy.models / BACKBONE / MODEL_FILE).info.threshold
    assert float(tags["operating_threshold"]) == pytest.approx(threshold, abs=5e-4)
    for key in ("backbone", "init", "input_size", "counting_threshold", "cv.auc", "test.patient_mae",
                "rule.patient_mae", "params_sha256", "model_sha256", "data_source"):
        assert tags.get(key) not in (None, "", "nan"), key
    assert "research use only" in version.description
    card = (copy.reports / "model_card.md").read_text()
    assert "Not for diagnosis" in card and run_id in card and "| auc |" in card
    # the card travels inside the registered model, and the run shows the logged model
    local = mlflow.artifacts.download_artifacts(registry.model_uri(done.version), dst_path=str(tmp_path))
    assert (Path(local) / "artifacts" / "model_card.md").read_text() == card
    # the version's source is the logged model, whose source run is the training run
    assert version.source.startswith("models:/m-")
    logged = registry.client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == run_id


def test_registering_the_same_model_again_reuses_its_version(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, stage_inputs: StageInputs,
    model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    copy = good_model.copy_to(tmp_path)
    first = register(copy, params, stage_inputs)
    # dvc repro deletes a stage's outputs before it runs again: the reused version rewrites them
    (copy.reports / "model_card.md").unlink()
    again = register(copy, params, stage_inputs)
    assert again.reused and again.version == first.version
    assert (copy.reports / "model_card.md").stat().st_size > 0
    assert len(Registry(params.mlflow).versions()) == 1


def test_the_gate_promotes_the_first_challenger_then_refuses_a_worse_one(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, bad_model: Candidate,
    stage_inputs: StageInputs, raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    raw = raw_dir
    register(good_model.copy_to(tmp_path / "good"), params, stage_inputs)
    first = promote(params, stage_inputs, raw)
    assert first.action == "promoted" and first.champion_after == "1"
    assert aliases(params) == {CHAMPION: "1", CHALLENGER: "1"}

    register(bad_model.copy_to(tmp_path / "bad"), params, stage_inputs)
    params_file = write_params(params, tmp_path / "params.yaml")
    record = tmp_path / PROMOTION_FILE
    result = runner.invoke(app, [
        "promote", "--params", str(params_file), "--crops", str(stage_inputs.crops),
        "--manifest", str(stage_inputs.manifest), "--split", str(stage_inputs.split),
        "--raw", str(raw), "--record", str(record),
    ])
    assert result.exit_code == 1, result.output
    assert "REFUSED" in result.output and "auc - champion's >= 0" in result.output
    decision = json.loads(record.read_text())
    assert decision["action"] == "refused" and decision["promoted"] == 0
    assert any(name.startswith("auc") for name in decision["failed"]), decision["criteria"]
    assert aliases(params) == {CHAMPION: "1", CHALLENGER: "2"}
    assert Registry(params.mlflow).version("2").tags["promotion.decision"] == "refused"


def test_force_needs_a_reason_is_recorded_and_rollback_restores_the_champion(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, bad_model: Candidate,
    stage_inputs: StageInputs, raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    raw = raw_dir
    register(good_model.copy_to(tmp_path / "good"), params, stage_inputs)
    promote(params, stage_inputs, raw)
    register(bad_model.copy_to(tmp_path / "bad"), params, stage_inputs)
    with pytest.raises(CtcidError, match="--reason"):
        promote(params, stage_inputs, raw, force=True)
    forced = promote(params, stage_inputs, raw, force=True, reason="field test of v2")
    assert forced.action == "forced" and forced.failed  # the criteria it failed stay on record
    assert aliases(params)[CHAMPION] == "2"
    tags = Registry(params.mlflow).version("2").tags
    assert tags["promotion.reason"] == "field test of v2" and "@" in tags["promotion.by"]

    back = rollback(params, reason="v2 over-counts")
    assert (back.champion_before, back.champion_after) == ("2", "1")
    assert aliases(params)[CHAMPION] == "1"
    tags = Registry(params.mlflow).version("2").tags
    assert tags["rolled_back"] == "true"
    history = tags["promotion.history"].splitlines()
    assert [line.split()[1] for line in history] == ["forced", "rolled_back"]
    assert history[0].endswith("field test of v2") and history[1].endswith("v2 over-counts")
    # the gate does not quietly re-promote what was rolled back
    again = promote(params, stage_inputs, raw)
    assert again.action == "refused" and "not rolled back before" in again.failed
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(params)
    assert aliases(params) == {CHAMPION: "1", CHALLENGER: "2"}


def test_promote_without_a_challenger_and_an_unknown_model_name_are_clear_errors(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, stage_inputs: StageInputs,
    raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    with pytest.raises(RegistryError, match=f"no registered model '{model_name}'"):
        promote(params, stage_inputs, raw_dir)
    register(good_model.copy_to(tmp_path), params, stage_inputs)
    registry = Registry(params.mlflow)
    registry.client.delete_registered_model_alias(model_name, CHALLENGER)
    with pytest.raises(RegistryError, match="no challenger"):
        promote(params, stage_inputs, raw_dir)
    with pytest.raises(RegistryError, match="no champion"):
        rollback(params)
    result = runner.invoke(app, ["models", "--params", str(write_params(params, tmp_path / "p.yaml")),
                                 "--model-name", "no-such-model"])
    assert result.exit_code == 1 and "no registered model 'no-such-model'" in result.output


def test_a_model_file_that_does_not_load_is_refused_and_nothing_moves(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, stage_inputs: StageInputs,
    raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    broken = good_model.copy_to(tmp_path / "broken")
    (broken.models / BACKBONE / MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(CtcidError, match="not a ctcid model file"):
        register(broken, params, stage_inputs)
    assert not Registry(params.mlflow).exists()

    register(good_model.copy_to(tmp_path / "good"), params, stage_inputs)
    promote(params, stage_inputs, raw_dir)
    # a registered version whose stored model file was damaged after registration
    other = good_model.copy_to(tmp_path / "other")
    with (other.models / BACKBONE / MODEL_FILE).open("ab") as handle:
        handle.write(b"\0")  # a new content hash: a new version
    done = register(other, params, stage_inputs)
    version = Registry(params.mlflow).version(done.version)
    stored = mlflow_server.stored_files(version.source.removeprefix("models:/"), MODEL_FILE)
    assert stored
    for path in stored:
        path.write_bytes(b"truncated")
    with pytest.raises(CtcidError, match=f"version {done.version} .* does not load"):
        promote(params, stage_inputs, raw_dir)
    assert aliases(params) == {CHAMPION: "1", CHALLENGER: done.version}

    # a champion that no longer loads blocks the comparison; only --force promotes past it
    third = good_model.copy_to(tmp_path / "third")
    with (third.models / BACKBONE / MODEL_FILE).open("ab") as handle:
        handle.write(b"\0\0")
    newest = register(third, params, stage_inputs).version
    champion = Registry(params.mlflow).version("1")
    for path in mlflow_server.stored_files(champion.source.removeprefix("models:/"), MODEL_FILE):
        path.write_bytes(b"truncated")
    with pytest.raises(CtcidError, match="champion cannot be compared"):
        promote(params, stage_inputs, raw_dir)
    assert aliases(params) == {CHAMPION: "1", CHALLENGER: newest}
    forced = promote(params, stage_inputs, raw_dir, force=True, reason="v1's files are damaged")
    assert forced.action == "forced" and "champion scores the current test set" in forced.failed
    assert aliases(params) == {CHAMPION: newest, CHALLENGER: newest}


def test_models_lists_versions_with_aliases_newest_first(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, bad_model: Candidate,
    stage_inputs: StageInputs, raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name)
    register(good_model.copy_to(tmp_path / "good"), params, stage_inputs)
    promote(params, stage_inputs, raw_dir)
    register(bad_model.copy_to(tmp_path / "bad"), params, stage_inputs)
    result = runner.invoke(
        app, ["models", "--params", str(write_params(params, tmp_path / "p.yaml"))], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if BACKBONE in line]
    assert len(lines) == 2 and "challenger" in lines[0] and "champion" in lines[1]
    assert lines[0].split()[0] == "2" and lines[1].split()[0] == "1"


def test_a_tracking_server_that_is_down_is_named_in_one_message(tmp_path: Path, model_name: str) -> None:
    # a port nobody listens on
    params = server_params(f"http://127.0.0.1:{free_port()}", model_name)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="127.0.0.1.*does not answer"):
        Registry(params.mlflow)
    assert time.monotonic() - start < 30
    result = runner.invoke(app, ["models", "--params", str(write_params(params, tmp_path / "p.yaml"))])
    assert result.exit_code == 1 and "does not answer" in result.output and "Traceback" not in result.output


def test_the_behavioural_checks_run_on_probes_from_the_test_crops(
    tmp_path: Path, mlflow_server: MlflowServer, good_model: Candidate, bad_model: Candidate,
    stage_inputs: StageInputs, raw_dir: Path, model_name: str,
) -> None:
    params = server_params(mlflow_server.uri, model_name, behaviour_checks=True)
    register(good_model.copy_to(tmp_path / "good"), params, stage_inputs)
    first = promote(params, stage_inputs, raw_dir)
    names = [c.name for c in first.criteria]
    for check in ("dihedral invariance", "CD45 ring lowers the score"):
        assert f"behaviour: {check}" in names
    # the spot check decides by default (spot_check_decides), under its plain name: these synthetic
    # test crops hold too few CTC-sized diploid cells to probe, so it is undecided, not failed
    spots = [c for c in first.criteria if c.name.startswith("behaviour: more CEP8 spots raise the score")]
    assert len(spots) == 1 and spots[0].name == "behaviour: more CEP8 spots raise the score"
    spot = spots[0]
    assert spot.passed is None if spot.challenger.startswith("probes ") else isinstance(spot.passed, bool)
    register(bad_model.copy_to(tmp_path / "bad"), params, stage_inputs)
    # taught that leukocytes are the CTCs, a CD45 ring raises its score: the gate names that
    second = promote(params, stage_inputs, raw_dir)
    assert second.action == "refused"
    assert "behaviour: CD45 ring lowers the score" in second.failed
