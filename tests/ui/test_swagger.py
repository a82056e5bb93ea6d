"""`ctcid serve`: BentoML's Swagger UI renders offline and lists the endpoints a lab calls."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

# they wait for the e2e project's build (tests/e2e_support.py), minutes
pytestmark = [pytest.mark.slow, pytest.mark.ui, pytest.mark.timeout(1800)]


def test_swagger_ui_lists_count_field(tab, service):
    page = tab.page
    page.goto(f"{service.url}/")
    expect(page.locator(".opblock-summary-path", has_text="/count_field").first).to_be_visible(timeout=60_000)
    for path in ("/count_sample", "/classify", "/model"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    assert tab.external == []
