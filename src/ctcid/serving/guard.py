"""The request guard: any request a client can form gets an answer, a malformed one a JSON 4xx.

An ASGI middleware on the service's app (``Service.add_asgi_middleware``), inside BentoML's own
(access log, metrics, timeout, concurrency). For each API route it checks the request line and
headers, then the multipart body as it streams in (:class:`~ctcid.serving.forms.FormCheck`), and
refuses what BentoML could not use with ctcid's error (``error``, ``field``, ``reason``, ``hint``,
``status``). A request that passes is handed to BentoML byte for byte, as it arrived (body.py).

Every 4xx leaving the app, the guard's, the handlers' or BentoML's and Starlette's own (404, 405,
429, ...), is given ctcid's shape and logged as one line (status, method, path, field, reason);
5xx answers pass unchanged, so a real fault keeps BentoML's traceback in the log and its 500.
docs/serving.md#malformed-requests says why a middleware and not a stricter model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from python_multipart.multipart import parse_options_header

from ctcid.errors import InputRejected
from ctcid.serving.body import Body, Rewrite
from ctcid.serving.forms import BAD_REQUEST, TOO_LARGE, FormCheck, FormSpec, form_charset
from ctcid.serving.http import error_body, rejection

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("ctcid.serving")
MAX_HEADER_BYTES = 8 * 1024  # uvicorn itself refuses a head over 16 KB, with a plain-text 400
_FORM_HINT = "Let the HTTP client build the form: curl -F, or requests' files="


class ClientGone(Exception):
    """The client closed the connection before its body was read: there is no one to answer."""


class RequestGuard:
    """ASGI middleware: check each API request against its form; shape and log every 4xx."""

    def __init__(
        self, app: Any, forms: Mapping[str, FormSpec], max_bytes: int, stall_s: float = 30.0
    ) -> None:
        self.app, self.forms, self.max_bytes, self.stall_s = app, dict(forms), max_bytes, stall_s

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = ShapedErrors(scope, send)
        spec = self.forms.get(scope["path"])
        try:
            self._check_head(scope)
            if spec is None:
                return await self.app(scope, receive, send)
            self._check_request(scope, spec)
            body, rewrites = await self._read_form(scope, receive, spec)
        except InputRejected as error:
            answer = rejection(error)
            if error.status == 405:
                answer.headers["allow"] = "POST"
            return await answer(scope, receive, send)
        except ClientGone:
            return None
        with body:
            await self.app(_rewritten(scope, rewrites), _replay(body.pieces(rewrites), receive), send)

    def _check_head(self, scope: dict) -> None:
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) + 4 for k, v in headers) + len(scope.get("query_string", b""))
        if size > MAX_HEADER_BYTES:
            raise InputRejected(
                431,
                "headers",
                f"headers and query are {size / 1024:.1f} KB, more than {MAX_HEADER_BYTES // 1024} KB",
                "Send the data in the form's fields, not in headers or the URL",
            )
        length = _header(scope, b"content-length")
        if length is None:
            return
        if not length.isdigit():
            raise InputRejected(BAD_REQUEST, "Content-Length", f"is {length!r}, not a byte count", _FORM_HINT)
        if int(length) > self.max_bytes:
            limit = self.max_bytes / 2**20
            raise InputRejected(
                TOO_LARGE,
                "request",
                f"body of {int(length) / 2**20:.1f} MB exceeds serving.max_upload_mb {limit:g}",
                "Send fewer or smaller files per request",
            )

    def _check_request(self, scope: dict, spec: FormSpec) -> None:
        if scope["method"] != "POST":
            raise InputRejected(
                405,
                "method",
                f"{scope['method']} is not accepted by {spec.route}",
                f"POST the form: {spec.example()}",
            )
        if scope.get("query_string"):
            raise InputRejected(
                BAD_REQUEST,
                "query",
                f"{spec.route} takes no query parameters "
                f"(got {scope['query_string'][:60].decode('latin-1')!r})",
                f"Send every value as a form field: {spec.accepted()}",
            )
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise InputRejected(
                BAD_REQUEST, "Content-Encoding", f"is {encoding!r}", "Send the form uncompressed"
            )
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        if _header(scope, b"content-length") in (None, "0") and not chunked:
            raise InputRejected(
                BAD_REQUEST,
                "request",
                "has no body",
                f"{spec.route} takes a multipart form of {spec.accepted()}: {spec.example()}",
            )
        content_type, options = parse_options_header(_header(scope, b"content-type"))
        if content_type != b"multipart/form-data":
            shown = content_type.decode("latin-1") or "missing"
            raise InputRejected(
                BAD_REQUEST,
                "Content-Type",
                f"is {shown}; {spec.route} takes multipart/form-data",
                f"Send a form of {spec.accepted()}: {spec.example()}",
            )
        if form_charset(options) is None:
            raise InputRejected(
                BAD_REQUEST,
                "Content-Type",
                f"charset {options[b'charset'].decode('latin-1')!r} is not one the service reads",
                "Send text fields in UTF-8 (the default: leave out the charset parameter)",
            )
        if not 1 <= len(options.get(b"boundary", b"")) <= 200:
            raise InputRejected(
                BAD_REQUEST,
                "Content-Type",
                "multipart/form-data without a usable boundary parameter",
                _FORM_HINT + " (setting Content-Type by hand drops the boundary)",
            )

    async def _read_form(self, scope: dict, receive: Receive, spec: FormSpec) -> tuple[Body, list[Rewrite]]:
        """The body, checked part by part as it arrives and kept, and the text values to re-encode."""
        _, options = parse_options_header(_header(scope, b"content-type"))
        check = FormCheck(spec, options[b"boundary"], form_charset(options) or "utf-8")
        body = Body()
        size, more = 0, True
        try:
            while more:
                message = await self._next(receive)
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:  # a chunked body has no Content-Length to check first
                    raise InputRejected(
                        TOO_LARGE,
                        "request",
                        f"body exceeds serving.max_upload_mb {self.max_bytes / 2**20:g}",
                        "Send fewer or smaller files per request",
                    )
                check.feed(chunk)
                if check.problem is None:
                    body.write(chunk)
                more = message.get("more_body", False)
            check.finish()
        except BaseException:
            body.close()
            raise
        return body, check.rewrites

    async def _next(self, receive: Receive) -> Message:
        try:
            async with asyncio.timeout(self.stall_s):  # unlike wait_for, no task per chunk
                return await receive()
        except TimeoutError:
            raise InputRejected(
                408,
                "request",
                f"no part of the body arrived for {self.stall_s:g} s",
                "Send the whole body; check the connection",
            ) from None


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _rewritten(scope: dict, rewrites: list[Rewrite]) -> dict:
    """The scope BentoML sees: its Content-Length follows the re-encoded text values."""
    if not rewrites or _header(scope, b"content-length") is None:
        return scope
    length = int(_header(scope, b"content-length") or 0)
    length += sum(len(text) - (end - start) for start, end, text in rewrites)
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def _replay(pieces: Iterator[bytes], receive: Receive) -> Receive:
    """A receive() that hands BentoML the checked body, then waits on the client (disconnects)."""
    pending: bytes | None = next(pieces, b"")
    done = False

    async def replayed() -> Message:
        nonlocal pending, done
        if done:
            return await receive()
        chunk, pending = pending or b"", next(pieces, None)
        done = pending is None
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed


_REPLACED = (b"content-type", b"content-length")


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


class ShapedErrors:
    """A send() that gives every 4xx ctcid's error shape and logs it as one line."""

    def __init__(self, scope: dict, send: Send) -> None:
        self.scope, self.send = scope, send
        self.held: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            self.held = message
            return
        if self.held is None or message["type"] != "http.response.body":
            return await self.send(message)
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        start, self.held = self.held, None
        error = shaped(start["status"], bytes(self.body))
        log.warning(
            "refused %s %s %s: %s: %s",
            error.status,
            _one_line(str(self.scope.get("method"))),
            _one_line(str(self.scope.get("path"))),
            _one_line(error.field),
            _one_line(error.reason),
        )
        body = error_body(error)
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _REPLACED]
        await self.send({**start, "headers": [*_json_headers(body), *kept]})
        await self.send({"type": "http.response.body", "body": body})


def _one_line(text: str) -> str:
    """Client text in the log stays on its line: no newline or control character gets through."""
    return text if text.isprintable() else ascii(text)


def shaped(status: int, body: bytes) -> InputRejected:
    """The error of a 4xx answer: ctcid's own as it is; anyone else's (BentoML, Starlette) recast."""
    try:
        data = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and {"field", "reason", "hint", "status"} <= set(data):
        return InputRejected(status, str(data["field"]), str(data["reason"]), str(data["hint"]))
    field, reason = "request", _reason_of(data) or HTTPStatus(status).phrase
    if isinstance(data, dict) and isinstance(data.get("detail"), list) and data["detail"]:
        first = data["detail"][0]  # pydantic's validation errors, as BentoML passes them on
        if isinstance(first, dict) and first.get("loc"):
            field = str(first["loc"][-1] if first["loc"][0] in ("body", "query") else first["loc"][0])
    hint = _HINTS.get(status, "See docs/serving.md for each endpoint's form")
    return InputRejected(status, field, reason, hint)


def _reason_of(data: Any) -> str:
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", "")) or str(data.get("error", ""))
        return str(data.get("error") or detail or "")
    if isinstance(data, list) and data:  # BentoML wraps some errors in a one-element list
        return _reason_of(data[0])
    return str(data)[:200]


_HINTS = {
    404: "The service's routes: POST /count_field, /count_sample, /classify; GET /model, /readyz; "
    "the Swagger UI at /",
    405: "See the Swagger UI at / for each route's method",
    429: "Too many requests in flight; retry after a pause",
}
