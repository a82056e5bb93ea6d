"""Data Docs that render without internet: GX's CDN assets swapped for copies shipped with ctcid.

Great Expectations 1.x writes every page with `<link>` and `<script>` tags to seven CDNs
(bootstrap, bootstrap-table, jQuery, popper, datepicker, Font Awesome, vega) and a navbar logo
fetched from GX's S3 bucket with the context id in its query (a tracking pixel). GX has no setting
for a self-contained site, so after each build :func:`make_offline` copies the vendored files
(``docs_assets/``, byte-identical to the CDN's: the tests check GX's own SRI hashes) into
``static/vendor/`` of the site and points every page at them by relative path, so the site works
from ``file://`` and from any folder it is copied to. Licences: ``docs_assets/LICENSES.md``.

A GX upgrade that adds an asset is caught here: any resource a page still loads from the network
is an error naming the page and the URL, not a page that silently breaks offline.
"""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

from ctcid.errors import CtcidError

ASSETS_PACKAGE = "ctcid.quality"
ASSETS_DIR = "docs_assets"
VENDOR_DIR = Path("static") / "vendor"  # inside the Data Docs site

# Where GX 1.x's templates load each library from -> its vendored folder, whose files keep the
# names they have below the CDN folder (docs_assets/LICENSES.md says where each came from)
CDN_FOLDERS: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/": "bootstrap-4.3.1/",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/": "bootstrap-4.3.1/",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/": "bootstrap-table-1.19.1/",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/": "bootstrap-table-1.19.0/",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/": "bootstrap-datepicker-1.9.0/",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/": "bootstrap-dark-1.1.0/",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/": "fontawesome-free-6.6.0/",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/": "popper.js-1.12.9/",
}
# URLs whose file is named otherwise; jsDelivr serves a major version's newest release, and these
# are the releases vendored
CDN_FILES: dict[str, str] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}

# GX's logos, from its S3 bucket (with a query naming the data context); the site has its own copy
_GX_IMAGES = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/[\w.-]+(\?[^\"')\s]*)?")
_LOCAL_LOGO = Path("static") / "images" / "logo-long.png"
# subresource integrity and CORS mode only make sense for the CDN copies: from file:// a
# `crossorigin` script is refused, and the vendored bytes are checked by the tests instead
_ATTRIBUTE_URL = re.compile(r'(?P<attr>(?:src|href)=")(?P<url>https?://[^"]+)"')
_STATIC_REF = re.compile(r'(?P<attr>(?:src|href)=")(?P<path>(?:\.\./)*static/(?P<rest>[^"?#]+))"')
_SRI = re.compile(r"\s+(?:integrity|crossorigin)=\"[^\"]*\"")
_CSS_URL = re.compile(r"url\(\s*['\"]?(https?://[^'\")\s]+)")
# the tags and attributes a browser fetches on its own while rendering a page
_FETCHED = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "embed": "src"}


def assets_root() -> Path:
    return Path(str(resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR)))


def vendored_file(url: str) -> str | None:
    """The vendored copy of a CDN URL, relative to ``docs_assets/``; None where there is none."""
    name = CDN_FILES.get(url)
    if name is None:
        folder = next((prefix for prefix in CDN_FOLDERS if url.startswith(prefix)), None)
        name = None if folder is None else CDN_FOLDERS[folder] + url.removeprefix(folder)
    return name if name is not None and (assets_root() / name).is_file() else None


def make_offline(site: Path) -> list[Path]:
    """Vendor the assets into ``site`` and rewrite its pages; returns the pages rewritten."""
    vendor = site / VENDOR_DIR
    shutil.rmtree(vendor, ignore_errors=True)
    shutil.copytree(assets_root(), vendor)
    pages = sorted(site.rglob("*.html")) + sorted((site / "static").rglob("*.css"))
    rewritten, remote = [], []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        offline = _rewrite(text, page.parent, site)
        if offline != text:
            page.write_text(offline, encoding="utf-8")
            rewritten.append(page)
        remote += [f"{page.relative_to(site)}: {url}" for url in remote_urls(offline, page.suffix == ".css")]
    if remote:
        raise CtcidError(
            f"{site}: Data Docs still load {len(remote)} resource(s) from the network: "
            + "; ".join(remote[:5])
            + ". Great Expectations' templates changed: vendor the asset in src/ctcid/quality/docs_assets "
            "and map its URL in CDN_FOLDERS or CDN_FILES of ctcid.quality.offline_docs "
            "(docs/validation.md#offline-data-docs)"
        )
    return rewritten


def _rewrite(text: str, folder: Path, site: Path) -> str:
    def relative(target: Path) -> str:
        return Path(os.path.relpath(site / target, folder)).as_posix()

    def local(match: re.Match[str]) -> str:
        vendored = vendored_file(match["url"])
        return match[0] if vendored is None else f'{match["attr"]}{relative(VENDOR_DIR / vendored)}"'

    def static(match: re.Match[str]) -> str:
        # GX writes validation pages one folder deeper than their links to static/ assume (its
        # favicon is missed): point each at the site's own static/ wherever the page lies
        target = folder / match["path"]
        if target.exists() or not (site / "static" / match["rest"]).exists():
            return match[0]
        return f'{match["attr"]}{relative(Path("static") / match["rest"])}"'

    text = _ATTRIBUTE_URL.sub(local, text)
    text = _STATIC_REF.sub(static, text)
    text = _GX_IMAGES.sub(relative(_LOCAL_LOGO), text)
    return _SRI.sub("", text)


class _Fetched(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = _FETCHED.get(tag)
        for name, value in attrs:
            if name == wanted and value and re.match(r"(https?:)?//", value):
                self.urls.append(value)
            if name == "style" and value:
                self.urls += _CSS_URL.findall(value)

    def handle_data(self, data: str) -> None:  # <style> blocks
        self.urls += _CSS_URL.findall(data)


def remote_urls(text: str, css: bool = False) -> list[str]:
    """The URLs a browser would fetch from the network to render a page (HTML, or CSS if ``css``)."""
    if css:
        return _CSS_URL.findall(text)
    parser = _Fetched()
    parser.feed(text)
    return parser.urls


def remote_resources(page: Path) -> list[str]:
    """:func:`remote_urls` of a file."""
    return remote_urls(page.read_text(encoding="utf-8"), page.suffix == ".css")
