"""The Data Docs index and a validation page render styled and working from file://, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from ctcid.quality.expectations import TABLES

# they wait for the e2e project's build (tests/e2e_support.py), minutes
pytestmark = [pytest.mark.slow, pytest.mark.ui, pytest.mark.timeout(1800)]

STYLED = """() => {
  const table = document.querySelector('table');
  const icons = [...document.fonts].filter(f => f.family.includes('Font Awesome') && f.status === 'loaded');
  return {
    collapse: table ? getComputedStyle(table).borderCollapse : null,
    bootstrapTable: document.querySelectorAll('.bootstrap-table').length,
    jquery: typeof window.jQuery,
    fontAwesome: icons.length,
  };
}"""


def docs(project: Path) -> Path:
    return project / "reports" / "data_docs"


def test_index_shows_styled_tables_of_every_validation_and_loads_nothing_remote(tab, project):
    page = tab.page
    page.goto((docs(project) / "index.html").as_uri())
    page.wait_for_load_state("load")
    page.evaluate("document.fonts.ready.then(() => true)")
    for table in TABLES:  # one row per gate table: its asset and its suite
        expect(page.get_by_role("cell", name=table, exact=True)).to_be_visible()
        expect(page.get_by_role("link", name=f"ctcid_{table}", exact=True).first).to_be_visible()
    style = page.evaluate(STYLED)
    assert style["collapse"] == "collapse"  # bootstrap's CSS (the browser's own is 'separate')
    assert style["jquery"] == "function" and style["bootstrapTable"] >= 1  # bootstrap-table's JS ran
    assert style["fontAwesome"] >= 1  # the status icons' font
    expect(page.get_by_placeholder("Search").first).to_be_visible()  # bootstrap-table's search box
    assert tab.external == []


def test_a_validation_page_shows_its_expectation_results_offline(tab, project):
    page = tab.page
    result = next(docs(project).glob("validations/ctcid_manifest/*/*/*.html"))
    page.goto(result.as_uri())
    page.wait_for_load_state("load")
    page.evaluate("document.fonts.ready.then(() => true)")
    expect(page.get_by_text("Status: Succeeded").first).to_be_visible()
    expect(page.get_by_text("Evaluated Expectations").first).to_be_visible()
    assert page.locator("table tbody tr").count() > 20  # one row per expectation and statistic
    style = page.evaluate(STYLED)
    assert style["collapse"] == "collapse" and style["fontAwesome"] >= 1
    logo = page.locator("nav img").first  # GX's logo, from the site itself, not GX's S3 bucket
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")
    assert tab.external == []
