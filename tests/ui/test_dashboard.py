"""`ctcid dashboard`: optuna-dashboard lists every study of the project's optuna.db."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ctcid import pages
from e2e_support import BACKBONES

# they wait for the e2e project's build (tests/e2e_support.py), minutes
pytestmark = [pytest.mark.slow, pytest.mark.ui, pytest.mark.timeout(1800)]


def test_the_dashboard_lists_the_studies_ctcid_dashboard_names(tab, project, dashboard):
    rows = pages.studies(f"sqlite:///{project / 'optuna.db'}", "ctcid", project / "reports")
    assert sorted(row.backbone for row in rows if row.current) == sorted(BACKBONES)
    printed = dashboard.output.read_text()
    assert "data<hash>-cfg<hash>" in printed  # the table's caption explains the names
    page = tab.page
    page.goto(f"{dashboard.url}/dashboard")
    for row in rows:
        expect(page.get_by_text(row.name).first).to_be_visible(timeout=60_000)
        assert row.name in printed
    assert tab.external == []


def test_a_study_page_shows_its_trials(tab, project, dashboard):
    row = pages.studies(f"sqlite:///{project / 'optuna.db'}", "ctcid", project / "reports")[0]
    page = tab.page
    page.goto(f"{dashboard.url}/dashboard")
    page.get_by_text(row.name).first.click()
    # the study's history: the objective per trial, and the running CV figure after each fold
    expect(page.get_by_role("heading", name="Intermediate values")).to_be_visible(timeout=60_000)
    assert "/dashboard/studies/" in page.url
    assert tab.external == []
