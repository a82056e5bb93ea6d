"""HTTP pieces of the service that are not BentoML's: error bodies, the body-size guard, names.

Every refusal is a JSON body ``{"error", "field", "reason", "hint", "status"}`` with a 4xx status,
so a client can show the lab what to fix; BentoML's own 400 for a malformed form keeps its shape.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse

from ctcid.errors import InputRejected

# BentoML saves an upload as NamedTemporaryFile(suffix=<uploaded file name>): 'tmp' + 8 random
# characters + the name. The name is the only way a lab tells its fields apart in the answer.
_TEMP_PREFIX = re.compile(r"^tmp[a-z0-9_]{8}(?=.)")


def upload_name(path: Path) -> str:
    return _TEMP_PREFIX.sub("", path.name) or path.name


def field_name(files: dict[str, Path]) -> str:
    """A field sent as one file per channel is named by what the file names share."""
    prefix = os.path.commonprefix(sorted(files)).rstrip("_-. ")
    return prefix or "field"


def rejection(error: InputRejected) -> JSONResponse:
    return JSONResponse({"error": str(error), **error.as_dict()}, status_code=error.status)


class BodyLimit:
    """ASGI middleware: 413 for a request whose declared body exceeds the limit, before it is read.

    A body without a Content-Length (chunked) passes here; the handlers check each file's size
    (an exception raised while BentoML reads the body would become a 500, never a 413).
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send, int(length))
        return await self.app(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any, size: int) -> None:
        error = InputRejected(
            413,
            "request",
            f"body of {size / 2**20:.1f} MB exceeds serving.max_upload_mb {self.max_bytes / 2**20:g}",
            "Send fewer or smaller files per request",
        )
        await rejection(error)(scope, receive, send)
