"""Data Docs render offline: every asset GX's templates load from a CDN is vendored, byte-identical
where GX pins a hash, and the built pages load nothing from the network (tests/ui opens them)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from ctcid.errors import CtcidError
from ctcid.quality import offline_docs
from ctcid.quality.gate import run_gate
from ctcid.quarantine import write_quarantine

_GX_TEMPLATE_DIR = Path(__import__("great_expectations").__file__).parent / "render" / "view" / "templates"
_TAG = re.compile(r"<(?:script|link)\b[^>]*>")
_URL = re.compile(r'(?:src|href)="(https?://[^"]+)"')


def template_tags() -> list[str]:
    """Every <script>/<link> tag of GX's installed templates that loads from the network."""
    tags = []
    for template in sorted(_GX_TEMPLATE_DIR.glob("*.j2")):
        tags += [tag for tag in _TAG.findall(template.read_text()) if _URL.search(tag)]
    assert tags, f"no CDN tag found in {_GX_TEMPLATE_DIR}: GX's templates moved"
    return tags


def test_every_cdn_asset_of_the_installed_gx_is_vendored():
    urls = [url for tag in template_tags() for url in _URL.findall(tag)]
    assert [url for url in urls if offline_docs.vendored_file(url) is None] == []


def test_vendored_copies_match_the_hashes_gx_pins():
    pinned = [tag for tag in template_tags() if "integrity=" in tag]
    assert len(pinned) >= 2  # bootstrap.min.js and popper.min.js in GX 1.24
    for tag in pinned:
        algorithm, expected = re.search(r'integrity="(sha\d+)-([^"]+)"', tag).groups()
        vendored = offline_docs.assets_root() / offline_docs.vendored_file(_URL.search(tag)[1])
        digest = base64.b64encode(hashlib.new(algorithm, vendored.read_bytes()).digest()).decode()
        assert digest == expected, vendored


def test_every_vendored_package_has_its_licence_listed():
    root = offline_docs.assets_root()
    listing = (root / "LICENSES.md").read_text()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        assert list(folder.glob("LICENSE*")), f"{folder.name} has no licence file"
        assert f"`{folder.name}/`" in listing, f"{folder.name} is not in LICENSES.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory, good_data, gate_params, gx_project) -> Path:
    """The Data Docs of a passing gate run, as `ctcid validate` writes them."""
    root = tmp_path_factory.mktemp("docs")
    manifest, crops = good_data
    (root / "segment").mkdir()
    manifest.to_parquet(root / "segment" / "manifest.parquet")
    np.save(root / "segment" / "crops.npy", crops)
    write_quarantine(root / "quarantine.csv", [])
    segment = root / "segment"
    run_gate(
        segment / "manifest.parquet", segment / "crops.npy", root / "quarantine.csv", root / "reports",
        gate_params, project_root=gx_project,
    )
    return root / "reports" / "data_docs"


def local_references(page: Path) -> list[str]:
    text = page.read_text()
    found = re.findall(r'(?:src|href)="([^"#?]+)', text) + re.findall(r"url\(['\"]?([^'\")?#]+)", text)
    return [ref for ref in found if not re.match(r"([a-z]+:|//)", ref)]


def test_the_built_site_loads_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 7  # the index, six suites' expectation pages and their validation pages
    for page in [*pages, *sorted((site / "static").rglob("*.css"))]:
        assert offline_docs.remote_resources(page) == [], page
        text = page.read_text()
        assert "cdn." not in text and "unpkg.com" not in text and "dataContextId" not in text, page
        assert "integrity=" not in text and "crossorigin=" not in text, page


def test_every_local_reference_of_every_page_exists(site):
    checked = 0
    for page in [*site.rglob("*.html"), *(site / "static").rglob("*.css")]:
        for ref in local_references(page):
            assert (page.parent / ref).resolve().is_file(), f"{page.relative_to(site)}: {ref} does not exist"
            checked += 1
    assert checked > 100
    # a validation page three folders down reaches the vendored jQuery by a relative path
    nested = next(site.glob("validations/*/*/*/*.html"))
    assert '"../../../../static/vendor/jquery-3.7.1/jquery.min.js"' in nested.read_text()


def test_an_unknown_cdn_asset_is_an_error_naming_page_and_url(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "index.html").write_text(
        '<html><head><script src="https://cdn.example.org/new-lib@2/lib.min.js"></script>'
        '<link rel="stylesheet" href="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css">'
        "</head><body></body></html>"
    )
    with pytest.raises(CtcidError, match=r"index.html: https://cdn.example.org/new-lib@2/lib.min.js") as err:
        offline_docs.make_offline(tmp_path)
    assert "docs_assets" in str(err.value)
    assert "bootstrap-table" not in str(err.value)  # that one is vendored, and was rewritten


def test_inline_styles_and_css_urls_are_checked(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<style>.logo { background: url('https://assets.example.org/a.png') }</style>"
        '<div style="background-image: url(http://example.org/b.png)"></div>'
        '<a href="https://greatexpectations.io">a link is not fetched</a>'
    )
    assert offline_docs.remote_resources(page) == ["https://assets.example.org/a.png", "http://example.org/b.png"]
