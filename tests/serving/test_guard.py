"""The request guard on its own: a Starlette app behind it, called over ASGI with bodies cut any way.

What the served Bento cannot show cheaply: every chunking of a body, a client that stalls, a
chunked body over the limit, a fault inside the app, the forms read from a real BentoML API, and
a body kept in a file past the memory limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import Annotated, Any

import bentoml
import pytest
from malformed import multipart
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ctcid.serving.body import Body
from ctcid.serving.forms import FormSpec, form_specs
from ctcid.serving.guard import RequestGuard

SPEC = FormSpec("/count", {"field": True}, frozenset({"sample"}), frozenset({"field"}))
BOUNDARY = "ctcid-boundary-7d1f"
FORM = [("content-type", f"multipart/form-data; boundary={BOUNDARY}")]
CHUNKED = [*FORM, ("transfer-encoding", "chunked")]


async def _echo(request: Request) -> JSONResponse:
    """What BentoML would read: Starlette's own parse of the form the guard let through."""
    form = await request.form()
    out: dict[str, Any] = {"length": request.headers.get("content-length")}
    for name, value in form.multi_items():
        out[name] = (await value.read()).hex() if hasattr(value, "read") else value
    return JSONResponse(out)


async def _fault(request: Request) -> JSONResponse:
    raise RuntimeError("a real fault")


APP = Starlette(routes=[Route("/count", _echo, methods=["POST"]), Route("/fault", _fault, methods=["POST"])])


def _call(
    guard: RequestGuard,
    path: str,
    body: bytes,
    headers: list[tuple[str, str]],
    chunk: int = 1 << 20,
    stall: bool = False,
) -> tuple[int, dict, list[tuple[bytes, bytes]]]:
    """One request through the guard: the body in ``chunk``-byte messages; ``stall``: never ends."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    last = len(pieces) - 1
    messages = [
        {"type": "http.request", "body": p, "more_body": stall or i < last} for i, p in enumerate(pieces)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # a client that stops sending
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload or b"{}"), start["headers"]


def _guard(max_bytes: int = 1 << 20, stall_s: float = 30.0) -> RequestGuard:
    return RequestGuard(APP, {"/count": SPEC}, max_bytes=max_bytes, stall_s=stall_s)


# "[1,\r\n-2]" is JSON (a list) whose "\r\n-" looks like the start of a boundary: cut after it, the
# parser hands those bytes back from its look-behind buffer, not from the current chunk
@pytest.mark.parametrize("value", [b"2024017", b"[1,\r\n-2]"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11, 19, 64, 4096])
def test_text_values_reach_the_app_as_text_however_the_body_is_cut(chunk: int, value: bytes) -> None:
    upload = bytes(range(256)) + f"\r\n--{BOUNDARY}x".encode()  # a near-boundary inside the file
    body = multipart([("field", "f.tif", upload), ("sample", None, value)], BOUNDARY)
    status, answer, _ = _call(_guard(), "/count", body, [*FORM, ("content-length", str(len(body)))], chunk)
    assert status == 200, answer
    assert answer["field"] == upload.hex()  # the file's bytes untouched
    assert json.loads(answer["sample"]) == value.decode()  # BentoML json-decodes it: text, not a list
    added = len(json.dumps(value.decode())) - len(value)
    assert int(answer["length"]) == len(body) + added  # Content-Length follows the re-encoding


def test_a_value_bentoml_would_read_as_text_is_passed_unchanged() -> None:
    body = multipart([("field", "f.tif", b"x"), ("sample", None, b'"S1"')], BOUNDARY)
    _, answer, _ = _call(_guard(), "/count", body, [*FORM, ("content-length", str(len(body)))], chunk=3)
    assert answer["sample"] == '"S1"' and int(answer["length"]) == len(body)


def test_a_client_that_stops_sending_gets_408() -> None:
    body = multipart([("field", "f.tif", b"x" * 100)], BOUNDARY)[:50]
    status, answer, _ = _call(_guard(stall_s=0.2), "/count", body, CHUNKED, stall=True)
    assert status == 408 and answer["field"] == "request" and "0.2 s" in answer["reason"]


def test_a_chunked_body_over_the_limit_gets_413_and_a_declared_one_before_reading() -> None:
    body = multipart([("field", "f.tif", b"x" * 5000)], BOUNDARY)
    status, answer, _ = _call(_guard(max_bytes=1000), "/count", body, CHUNKED, chunk=256)
    assert status == 413 and "serving.max_upload_mb" in answer["reason"]
    status, answer, _ = _call(_guard(max_bytes=1000), "/count", b"", [*FORM, ("content-length", "5000")])
    assert status == 413 and "body of 0.0 MB" in answer["reason"]


def test_a_wrong_method_gets_405_with_allow() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/count", "query_string": b"", "headers": []}
    asyncio.run(_guard()(scope, None, send))
    assert sent[0]["status"] == 405 and (b"allow", b"POST") in sent[0]["headers"]


def test_a_real_fault_is_not_hidden_and_client_errors_log_one_line(caplog: pytest.LogCaptureFixture) -> None:
    body = multipart([("field", "f.tif", b"x")], BOUNDARY)
    with pytest.raises(RuntimeError, match="a real fault"):  # uvicorn or BentoML log it and answer 500
        _call(_guard(), "/fault", body, [*FORM, ("content-length", str(len(body)))])
    with caplog.at_level(logging.WARNING, logger="ctcid.serving"):
        text = [("content-type", "text/plain"), ("content-length", "1")]
        status, answer, _ = _call(_guard(), "/count", b"x", text)
        status_404, answer_404, _ = _call(_guard(), "/nowhere\nforged line", b"", [])
    assert status == 400 and answer["field"] == "Content-Type"
    assert status_404 == 404 and answer_404["reason"] == "Not Found" and answer_404["status"] == 404
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].startswith("refused 400 POST /count: Content-Type: is text/plain")


def test_forms_are_read_from_a_bentoml_apis_input_model() -> None:
    @bentoml.service(name="toy")
    class Toy:
        @bentoml.api(route="/count_field")
        def count_field(
            self, field: Annotated[list[Path], Field(description="files")], channel_map: str = ""
        ) -> dict:
            return {}

        @bentoml.api(route="/classify")
        def classify(self, crops: Path) -> dict:
            return {}

    forms = form_specs(Toy.apis)
    assert forms["/count_field"].files == {"field": True} and forms["/count_field"].texts == {"channel_map"}
    assert forms["/count_field"].required == {"field"}
    assert forms["/classify"].files == {"crops": False} and not forms["/classify"].texts


@pytest.mark.parametrize("memory_bytes", [1 << 20, 1000])
def test_a_body_is_handed_on_as_it_came_from_memory_or_from_a_file(memory_bytes: int) -> None:
    data = random.Random(0).randbytes(10_000)
    with Body(memory_bytes) as body:
        for i in range(0, len(data), 777):
            body.write(data[i : i + 777])
        assert (body.file is not None) == (memory_bytes < len(data))
        assert b"".join(body.pieces()) == data
        spliced = b"".join(body.pieces([(5000, 5001, b"YY"), (10, 20, b"X")]))
        assert spliced == data[:10] + b"X" + data[20:5000] + b"YY" + data[5001:]
