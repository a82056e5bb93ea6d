"""The Swagger UI page at ``/``, without the Google Tag Manager BentoML puts in it.

BentoML 1.4's page (``_bentoml_impl/server/main-openapi.html``) loads
``googletagmanager.com/gtm.js`` in every browser that opens the service: a lab's machine may have
no internet, and its users did not agree to be tracked. This ASGI middleware answers ``GET /`` with
the same page, its two Tag Manager blocks removed, and a Content-Security-Policy that lets the page
load only from the service itself (Swagger UI's own files are served from ``/static_content``).
Every other request passes through untouched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.responses import Response

from ctcid.errors import CtcidError

# Swagger UI sets style attributes and shows data: images; everything else comes from the service
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'none'; object-src 'none'; base-uri 'self'"
)
_TAG_MANAGER = re.compile(r"<!-- Google Tag Manager.*?<!-- End Google Tag Manager[^>]*-->\s*", re.DOTALL)


def bentoml_index() -> Path:
    import _bentoml_impl.server

    return Path(_bentoml_impl.server.__file__).parent / "main-openapi.html"


def offline_page(html: str) -> str:
    """BentoML's page without its Tag Manager; any other remote script left is an error."""
    page = _TAG_MANAGER.sub("", html)
    remote = re.findall(r"<(?:script|iframe|link)\b[^>]*(?:src|href)=\"(https?://[^\"]+)\"", page)
    if "googletagmanager" in page or remote:
        raise CtcidError(
            f"BentoML's Swagger UI page loads {remote or ['Google Tag Manager']} from the network; "
            "update ctcid/serving/index_page.py for this BentoML"
        )
    return page


class OfflineIndex:
    """ASGI middleware: ``GET``/``HEAD /`` answered with :func:`offline_page` of BentoML's own page."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.page = offline_page(bentoml_index().read_text(encoding="utf-8")).encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            headers = {"content-security-policy": CONTENT_SECURITY_POLICY, "cache-control": "no-cache"}
            return await Response(self.page, media_type="text/html", headers=headers)(scope, receive, send)
        return await self.app(scope, receive, send)
