"""The links `ctcid ui` prints and the study table `ctcid dashboard` prints (tests/ui opens them)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from ctcid import cli, pages
from ctcid.config.mlflow import MlflowParams
from ctcid.errors import CtcidError
from ctcid.tracking import open_experiment


def test_links_open_the_training_view_of_the_experiment_and_the_model():
    links = pages.MlflowLinks("http://127.0.0.1:5000", "7", "ctcid-classifier")
    assert links.runs == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert links.model == "http://127.0.0.1:5000/#/models/ctcid-classifier?workflowType=machine_learning"
    assert pages.MlflowLinks("http://h:1", None, "m").runs == "http://h:1/#/experiments?workflowType=machine_learning"


def test_links_name_the_experiment_of_the_tracking_database(tmp_path):
    database, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    params = MlflowParams(tracking_uri=database, artifact_location=artifacts)
    _, experiment = open_experiment(params)
    links = pages.mlflow_links(params, port=5123)
    assert links.base == "http://127.0.0.1:5123" and links.experiment_id == experiment != "0"
    assert f"/experiments/{experiment}/runs?" in links.runs


def test_no_tracking_database_yet_gives_the_experiment_list_and_creates_nothing(tmp_path):
    params = MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert pages.mlflow_links(params).experiment_id is None
    assert not (tmp_path / "mlflow.db").exists()


def test_with_a_tracking_server_the_links_point_at_it_and_nothing_starts(monkeypatch):
    params = MlflowParams(tracking_uri="http://tracking.lab.example:5000/", experiment="ctcid")
    monkeypatch.setattr(pages, "experiment_id", lambda params: "3")  # no server runs at that address
    links = pages.mlflow_links(params, port=5123)
    assert links.runs == "http://tracking.lab.example:5000/#/experiments/3/runs?workflowType=machine_learning"
    with pytest.raises(CtcidError, match="its UI is there"):
        pages.mlflow_ui_command(params, "127.0.0.1", 5000)


def test_the_ui_command_serves_the_database_on_loopback(tmp_path):
    params = MlflowParams(tracking_uri="sqlite:///mlflow.db")
    command = pages.mlflow_ui_command(params, "127.0.0.1", 5001)
    assert Path(command[0]).name == "mlflow" and Path(command[0]).is_file()
    assert command[1:4] == ["ui", "--backend-store-uri", "sqlite:///mlflow.db"]
    assert command[4:] == ["--host", "127.0.0.1", "--port", "5001"]
    dashboard = pages.dashboard_command("sqlite:///optuna.db", "127.0.0.1", 8081)
    assert Path(dashboard[0]).name == "optuna-dashboard" and Path(dashboard[0]).is_file()


def _study(storage: str, name: str, values: list[float | None]) -> None:
    """A study with one trial per value: a float completes, None is pruned."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for value in values:
        trial = study.ask()
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)


def test_studies_are_listed_per_backbone_with_the_current_one_marked(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(storage, "ctcid-resnet18-data0123456789-cfgaaaaaaaa", [0.5])  # an older study: other data
    _study(storage, "ctcid-resnet18-data9999999999-cfgaaaaaaaa", [0.6, None, 0.8])
    _study(storage, "ctcid-vgg16-data9999999999-cfgaaaaaaaa", [None])
    (tmp_path / "reports" / "tune").mkdir(parents=True)
    report = {"backbone": "resnet18", "study": "ctcid-resnet18-data9999999999-cfgaaaaaaaa"}
    (tmp_path / "reports" / "tune" / "resnet18.json").write_text(json.dumps(report))
    rows = pages.studies(storage, "ctcid", tmp_path / "reports")
    listed = [(row.backbone, row.current) for row in rows]
    assert listed == [("resnet18", True), ("resnet18", False), ("vgg16", False)]
    current = rows[0]
    assert (current.complete, current.pruned, current.failed, current.best) == (2, 1, 1, 0.8)
    assert rows[2].best is None
    table = pages.study_table(rows)
    assert table.row_count == 3 and table.columns[0].overflow == "fold"
    assert "data<hash>-cfg<hash>" in pages.STUDY_NAMES


def test_no_study_database_is_an_empty_list(tmp_path):
    assert pages.studies(f"sqlite:///{tmp_path / 'optuna.db'}", "ctcid", tmp_path) == []
    assert not (tmp_path / "optuna.db").exists()


def test_ctcid_ui_with_a_tracking_server_prints_its_links_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(pages, "exec_server", started.append)
    monkeypatch.setattr(pages, "experiment_id", lambda params: "4")  # no server runs at that address
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"mlflow": {"tracking_uri": "http://tracking.example:5000"}}))
    result = CliRunner().invoke(cli.app, ["ui"])
    assert result.exit_code == 0, result.output
    assert "http://tracking.example:5000/#/experiments/4/runs?workflowType=machine_learning" in result.output
    assert started == []


def test_ctcid_ui_and_dashboard_say_what_they_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(pages, "exec_server", started.append)
    (tmp_path / "params.yaml").write_text("{}\n")
    result = CliRunner().invoke(cli.app, ["ui", "--port", "5009"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:5009/#/experiments?workflowType=machine_learning" in result.output  # none yet
    result = CliRunner().invoke(cli.app, ["ui", "--links"])
    assert result.exit_code == 0 and "http://127.0.0.1:5000/#/" in result.output
    result = CliRunner().invoke(cli.app, ["dashboard", "--port", "8089"])
    assert result.exit_code == 0, result.output
    assert "no study in sqlite:///optuna.db yet" in result.output
    assert [command[-4:] for command in started] == [
        ["--host", "127.0.0.1", "--port", "5009"],
        ["--host", "127.0.0.1", "--port", "8089"],
    ]


def test_ctcid_models_points_at_the_same_model_page(tmp_path):
    from ctcid.registry_client import RegistryClient

    local = RegistryClient(MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")).ui_hint()
    assert local == "make mlflow (ctcid ui), then open " + pages.MlflowLinks(
        "http://127.0.0.1:5000", None, "ctcid-classifier"
    ).model


def test_a_missing_tool_names_itself_and_how_to_install_it(monkeypatch):
    monkeypatch.setattr(pages.shutil, "which", lambda name: None)
    with pytest.raises(CtcidError, match=r"no-such-dashboard is not installed; run make install"):
        pages._tool("no-such-dashboard")


def test_an_unreadable_tracking_store_is_one_message_naming_it(tmp_path):
    database = tmp_path / "mlflow.db"
    database.write_text("not a database")
    with pytest.raises(CtcidError, match=r"mlflow.db cannot be read .*check mlflow.tracking_uri"):
        pages.experiment_id(MlflowParams(tracking_uri=f"sqlite:///{database}"))
