"""HTTP pieces of the handlers that are not BentoML's: error bodies and upload names.

Every refusal is a JSON body ``{"error", "field", "reason", "hint", "status"}`` with a 4xx status,
so a client can show the lab what to fix; :mod:`ctcid.serving.guard` refuses malformed requests
before they reach a handler, with the same shape.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from starlette.responses import Response

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


def error_body(error: InputRejected) -> bytes:
    """The JSON of a refusal, as handlers and the request guard send it."""
    return json.dumps({"error": str(error), **error.as_dict()}).encode()


def rejection(error: InputRejected) -> Response:
    return Response(error_body(error), status_code=error.status, media_type="application/json")
