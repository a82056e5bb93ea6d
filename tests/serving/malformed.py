"""Malformed requests for any multipart API, built from its OpenAPI document, sent byte for byte.

The cases cover what issue 26 lists (wrong or extra part names, binary in a text part, text in a
file part, wrong content types, no boundary, truncated and empty bodies, wrong methods, huge
headers, JSON where a form is expected, query junk) and seeded random mutations of a good form.
A URL sent anywhere points at a :class:`Canary`, a throw-away loopback server that counts every
connection, so a test can show the service fetched nothing. ``bench/bench_guard.py`` sends the same
cases to a Bento with and without the request guard.
"""

from __future__ import annotations

import gzip
import http.client
import json
import pickle
import random
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Part = tuple[str | None, str | None, bytes]  # (name, filename or None for a text part, content)
GOOD_TEXT = b"S0042"


@dataclass(frozen=True)
class Endpoint:
    """A POST route taking multipart/form-data, with its file and text fields."""

    route: str
    files: dict[str, bool]  # file field -> takes several files
    texts: list[str]
    required: list[str]


def endpoints_of(openapi: dict[str, Any]) -> list[Endpoint]:
    """Every POST operation of the document whose request body is multipart/form-data."""
    found = []
    for route, item in openapi["paths"].items():
        body = item.get("post", {}).get("requestBody", {}).get("content", {})
        if "multipart/form-data" not in body:
            continue
        schema = _resolve(openapi, body["multipart/form-data"]["schema"])
        files, texts = {}, []
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type")
            if kind == "file" or prop.get("format") == "binary":
                files[name] = False
            elif kind == "array" and (prop.get("items", {}).get("type") == "file"
                                      or prop.get("items", {}).get("format") == "binary"):
                files[name] = True
            else:
                texts.append(name)
        found.append(Endpoint(route, files, texts, list(schema.get("required", []))))
    return found


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = openapi
    for key in ref.lstrip("#/").split("/"):
        node = node[key]
    return node


@dataclass
class Case:
    """One request. ``http_level``: the HTTP server itself may refuse it (plain text, not JSON)."""

    name: str
    route: str
    method: str = "POST"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    query: str = ""
    http_level: bool = False
    malformed: bool = True  # False: odd but valid, any non-5xx answer will do


def multipart(parts: list[Part], boundary: str = "ctcid-boundary-7d1f") -> bytes:
    out = bytearray()
    for name, filename, content in parts:
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def form_headers(boundary: str = "ctcid-boundary-7d1f") -> list[tuple[str, str]]:
    return [("Content-Type", f"multipart/form-data; boundary={boundary}")]


def good_parts(endpoint: Endpoint, upload: bytes) -> list[Part]:
    """A well-formed form: one upload per file field, a name in each text field."""
    parts: list[Part] = [(name, f"{name}.tif", upload) for name in endpoint.files]
    return parts + [(name, None, GOOD_TEXT) for name in endpoint.texts]


def cases(endpoint: Endpoint, upload: bytes, canary: str, seed: int = 0, mutations: int = 12) -> list[Case]:
    """The malformed requests for one endpoint (``upload``: a file its file fields accept)."""
    return [
        *_part_cases(endpoint, upload, canary),
        *_framing_cases(endpoint, upload, canary),
        *_request_cases(endpoint, upload),
        *_mutations(endpoint, upload, seed, mutations),
    ]


def _case(endpoint: Endpoint, name: str, parts: list[Part], **options: Any) -> Case:
    return Case(name, endpoint.route, headers=form_headers(), body=multipart(parts), **options)


def _part_cases(endpoint: Endpoint, upload: bytes, canary: str) -> Iterator[Case]:
    good = good_parts(endpoint, upload)
    binary = bytes(range(256)) * 4
    yield _case(endpoint, "extra binary file part", [*good, ("extra", "x.bin", binary)])
    yield _case(endpoint, "extra binary text part", [*good, ("extra", None, binary)])
    yield _case(endpoint, "only an unknown part", [("nope", None, b"1")])
    yield _case(endpoint, "part without a name", [*good, (None, None, b"x")])
    yield _case(endpoint, "part with an empty name", [*good, ("", None, b"x")])
    yield _case(endpoint, "no parts at all", [])
    for name in endpoint.files:
        rest = [p for p in good if p[0] != name]
        url = f"{canary}/{name}.tif".encode()
        yield _case(endpoint, f"{name}: a URL as text", [*rest, (name, None, url)])
        yield _case(endpoint, f"{name}: a quoted URL", [*rest, (name, None, f'"{canary}/q.tif"'.encode())])
        yield _case(endpoint, f"{name}: plain text", [*rest, (name, None, b"hello")])
        yield _case(endpoint, f"{name}: binary under another name", [*rest, (name + "s", "f.tif", binary)])
        yield _case(endpoint, f"{name}: missing", rest)
        if not endpoint.files[name]:
            yield _case(endpoint, f"{name}: two files", [*good, (name, "b.tif", upload)])
    for name in endpoint.texts:
        rest = [p for p in good if p[0] != name]
        yield _case(endpoint, f"{name}: binary bytes", [*rest, (name, None, binary)])
        yield _case(endpoint, f"{name}: a file upload", [*rest, (name, "n.txt", b"S1")])
        yield _case(endpoint, f"{name}: sent twice", [*good, (name, None, b"S2")])
        yield _case(endpoint, f"{name}: 100 KB of text", [*rest, (name, None, b"a" * 100_000)])
        for value in (b"123", b"[1, 2]", b"null", b"true", b'{"a": 1}', b"", b'"quoted"', b"1e999"):
            odd = [*rest, (name, None, value)]
            yield _case(endpoint, f"{name}: {value.decode()!r}", odd, malformed=False)


def _framing_cases(endpoint: Endpoint, upload: bytes, canary: str) -> Iterator[Case]:
    body = multipart(good_parts(endpoint, upload))
    route, first = endpoint.route, next(iter(endpoint.files), "file")
    for content_type in ("", "text/plain", "application/octet-stream", "multipart/mixed; boundary=x",
                         "application/vnd.bentoml+pickle", "image/tiff"):
        headers = [("Content-Type", content_type)] if content_type else []
        yield Case(f"Content-Type {content_type or 'missing'}", route, headers=headers, body=body)
    yield Case("pickle payload", route, headers=[("Content-Type", "application/vnd.bentoml+pickle")],
               body=pickle.dumps({first: "x"}))
    no_boundary = [("Content-Type", "multipart/form-data")]
    yield Case("multipart without boundary", route, headers=no_boundary, body=body)
    yield Case("boundary of 300 characters", route,
               headers=[("Content-Type", "multipart/form-data; boundary=" + "b" * 300)], body=body)
    yield Case("boundary not in the body", route, headers=form_headers("other-boundary"), body=body)
    utf16 = [("Content-Type", "multipart/form-data; charset=utf-16; boundary=ctcid-boundary-7d1f")]
    yield Case("charset utf-16", route, headers=utf16, body=body)
    for fraction in (0.1, 0.5, 0.99):
        cut = body[: int(len(body) * fraction)]
        yield Case(f"body cut at {fraction:.0%}", route, headers=form_headers(), body=cut)
    yield Case("no closing boundary", route, headers=form_headers(), body=body[: body.rindex(b"--ctcid")])
    yield Case("empty body", route, headers=form_headers(), body=b"")
    yield Case("empty body, no type", route)
    yield Case("gzip-encoded form", route, headers=[*form_headers(), ("Content-Encoding", "gzip")],
               body=gzip.compress(body))
    url = f"{canary}/{first}.tif".encode()
    yield Case("JSON body", route, headers=[("Content-Type", "application/json")],
               body=json.dumps({first: url.decode()}).encode())
    as_json = [("Content-Type", "application/json")]
    yield Case("JSON string URL", route, headers=as_json, body=b'"' + url + b'"')
    yield Case("bare URL body", route, headers=[("Content-Type", "application/json")], body=url)
    yield Case("urlencoded form", route, headers=[("Content-Type", "application/x-www-form-urlencoded")],
               body=b"%s=%s" % (first.encode(), url))
    # no body after it: the server answers at the header, then closes before a body could be sent
    yield Case("Content-Length not a number", route, headers=[*form_headers(), ("Content-Length", "abc")],
               http_level=True)


def _request_cases(endpoint: Endpoint, upload: bytes) -> Iterator[Case]:
    route, body = endpoint.route, multipart(good_parts(endpoint, upload))
    for method in ("GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        yield Case(f"method {method}", route, method=method, headers=form_headers(), body=body)
    for query in ("a=1", "%ff%fe%00", "sample=S1&sample=S2", "x=" + "y" * 3000):
        yield Case(f"query {query[:20]}", route, headers=form_headers(), body=body, query=query)
    yield Case("one 10 KB header", route, headers=[*form_headers(), ("X-Junk", "j" * 10_000)], body=body)
    many = [*form_headers(), *[(f"X-J{i}", "j" * 40) for i in range(200)]]
    yield Case("200 small headers", route, headers=many, body=body)
    yield Case("one 20 KB header", route, headers=[*form_headers(), ("X-Junk", "j" * 20_000)], body=body,
               http_level=True)


def _mutations(endpoint: Endpoint, upload: bytes, seed: int, count: int) -> Iterator[Case]:
    """Seeded damage to a good form: flipped bytes, cut or repeated spans, junk inserted."""
    rng = random.Random(f"{seed}:{endpoint.route}")
    body = multipart(good_parts(endpoint, upload))
    for i in range(count):
        data = bytearray(body)
        kind = rng.choice(["flip", "cut", "repeat", "insert"])
        at = rng.randrange(len(data))
        span = rng.randint(1, 64)
        if kind == "flip":
            for j in range(at, min(at + span, len(data))):
                data[j] = rng.randrange(256)
        elif kind == "cut":
            del data[at : at + span]
        elif kind == "repeat":
            data[at:at] = data[at : at + span]
        else:
            data[at:at] = rng.randbytes(span)
        name = f"mutation {i} ({kind} at {at})"
        yield Case(name, endpoint.route, headers=form_headers(), body=bytes(data), malformed=False)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def error(self) -> dict[str, Any] | None:
        """ctcid's error body, or None when the answer is not one."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        keys = {"error", "field", "reason", "hint", "status"}
        shaped = isinstance(data, dict) and keys <= set(data) and data["status"] == self.status
        return data if shaped else None


def send(base_url: str, case: Case, timeout: float = 120) -> Answer:
    """The case's bytes as they are: no header or body is fixed by the client library."""
    host = urlsplit(base_url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=timeout)
    try:
        path = case.route + (f"?{case.query}" if case.query else "")
        connection.putrequest(case.method, path, skip_accept_encoding=True)
        names = {k.lower() for k, _ in case.headers}
        for key, value in case.headers:
            connection.putheader(key, value)
        if "content-length" not in names and (case.body or case.method in ("POST", "PUT", "PATCH")):
            connection.putheader("Content-Length", str(len(case.body)))
        connection.endheaders(case.body or None)
        response = connection.getresponse()
        return Answer(response.status, response.getheader("content-type", ""), response.read())
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        return Answer(0, "", repr(error).encode())  # the server dropped the connection: no answer
    finally:
        connection.close()


class Canary(socketserver.ThreadingTCPServer):
    """A loopback server that counts connections; any fetch of a URL pointing here is seen."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _CanaryHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class _CanaryHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        body = b"II*\x00" + b"\x00" * 60  # looks like a TIFF, so a fetch would not fail early
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@contextmanager
def canary() -> Iterator[Canary]:
    server = Canary()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def problem(case: Case, answer: Answer) -> str | None:
    """What is wrong with the answer to a case, or None: no 5xx, a malformed request a JSON 4xx."""
    if answer.status >= 500:
        return f"server error {answer.status}"
    if answer.status == 0 and not case.http_level:
        return f"no answer ({answer.body.decode()})"
    if case.malformed and not 400 <= answer.status < 500 and answer.status != 0:
        return f"answered {answer.status} to a malformed request"
    shaped_required = 400 <= answer.status < 500 and not case.http_level and case.method != "HEAD"
    if shaped_required and answer.error() is None:
        return f"{answer.status} not in ctcid's error shape: {answer.body[:120]!r}"
    return None
