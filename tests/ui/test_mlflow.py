"""`ctcid ui`: MLflow's UI opens on the ctcid experiment's training runs and on the registered model."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from ctcid import pages
from ctcid.config.loader import load_params
from e2e_support import BACKBONES, registry

# they wait for the e2e project's build (tests/e2e_support.py), minutes
pytestmark = [pytest.mark.slow, pytest.mark.ui, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def links(project, mlflow_ui) -> pages.MlflowLinks:
    mlflow = load_params(project / "params.yaml", {}).mlflow
    mlflow = mlflow.model_copy(update={"tracking_uri": f"sqlite:///{project / 'mlflow.db'}"})
    return pages.mlflow_links(mlflow, port=int(mlflow_ui.url.rsplit(":", 1)[1]))


def test_ctcid_ui_prints_the_links_it_serves(links, mlflow_ui):
    printed = mlflow_ui.output.read_text()
    assert links.runs in printed and links.model in printed
    assert links.experiment_id is not None and f"/experiments/{links.experiment_id}/runs?" in links.runs


def test_the_runs_link_lists_the_five_backbone_runs_in_the_training_view(tab, links):
    page = tab.page
    page.goto(links.runs)
    for backbone in BACKBONES:  # the train stage's run per backbone: <backbone>-<init>
        expect(page.get_by_text(re.compile(rf"^{backbone}-[a-z]+$")).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Run Name").first).to_be_visible()
    # MLflow 3 opens an experiment on its GenAI overview unless told otherwise: not here
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url
    assert page.get_by_text("Token Usage").count() == 0
    assert tab.external == []


def test_the_model_link_shows_the_registered_model_with_its_champion(tab, links, project):
    champion = registry(project).champion()
    assert champion is not None, "the tiny project ends with a champion (tests/e2e)"
    page = tab.page
    page.goto(links.model)
    expect(page.get_by_text("ctcid-classifier").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"^@?\s*champion$")).first).to_be_visible()
    expect(page.get_by_text(f"Version {champion.version}").first).to_be_visible()
    assert tab.external == []
