"""Any request a client can form: a malformed one gets a JSON 4xx, none a 5xx, no URL is fetched.

The requests come from ``malformed.py``, built from the served Bento's own OpenAPI document, so a
new endpoint is covered the day it is added. ``test_openapi.py`` adds schemathesis' generated ones.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from malformed import (
    Answer,
    Case,
    Endpoint,
    canary,
    cases,
    endpoints_of,
    good_parts,
    multipart,
    problem,
    send,
)
from service_support import Packaged, Server

pytestmark = pytest.mark.service


# what some cases must be told: case name ({file}/{text}: the endpoint's fields) -> status, words
EXPECTED = {
    "extra binary text part": (400, "extra: is not a field of"),
    "part without a name": (400, "has no name"),
    "multipart without boundary": (400, "without a usable boundary"),
    "body cut at 50%": (400, "ends before its closing boundary"),
    "no closing boundary": (400, "ends before its closing boundary"),
    "empty body": (400, "request: has no body"),
    "Content-Type text/plain": (400, "Content-Type: is text/plain"),
    "JSON body": (400, "Content-Type: is application/json"),
    "pickle payload": (400, "Content-Type: is application/vnd.bentoml+pickle"),
    "gzip-encoded form": (400, "Content-Encoding: is 'gzip'"),
    "charset utf-16": (400, "charset 'utf-16'"),
    "method GET": (405, "GET is not accepted"),
    "query a=1": (400, "takes no query parameters"),
    "one 10 KB header": (431, "more than 8 KB"),
    "{file}: a URL as text": (400, "{file}: is text ('http://127.0.0.1:"),
    "{file}: missing": (400, "{file}: is missing from the form"),
    "{file}: two files": (400, "{file}: holds more than one file"),
    "{text}: binary bytes": (400, "{text}: is not utf-8 text"),
    "{text}: a file upload": (400, "{text}: is a file upload; this field takes text"),
    "{text}: sent twice": (400, "{text}: is sent more than once"),
    "{text}: 100 KB of text": (413, "{text}: is more than 64 KB of text"),
}


def _expected(endpoint: Endpoint, case: Case) -> tuple[int, str] | None:
    for pattern, (status, words) in EXPECTED.items():
        for name in [*endpoint.files, *endpoint.texts] or [""]:
            fields = {"file": name, "text": name}
            if pattern.format(**fields) == case.name:
                return status, words.format(**fields)
    return None


def _log_since(server: Server, offset: int, settle_s: float = 5.0) -> str:
    """The server log written after ``offset``, once it has stopped growing (workers log async)."""
    size, deadline = -1, time.monotonic() + settle_s
    while time.monotonic() < deadline:
        now = server.log.stat().st_size
        if now == size:
            break
        size = now
        time.sleep(0.5)
    with server.log.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


def _endpoints(service: Server) -> list:
    found = endpoints_of(requests.get(f"{service.url}/docs.json", timeout=30).json())
    assert {e.route for e in found} == {"/count_field", "/count_sample", "/classify"}
    return found


@pytest.mark.timeout(600)  # a few hundred requests, normally seconds
def test_every_malformed_request_gets_a_json_4xx_and_nothing_is_fetched(
    service: Server, packaged: Packaged
) -> None:
    upload = packaged.field(0, 0).read_bytes()
    offset = service.log.stat().st_size
    answers: list[tuple[Endpoint, Case, Answer]] = []
    with canary() as watched:
        for endpoint in _endpoints(service):
            for case in cases(endpoint, upload, watched.url, seed=0, mutations=12):
                answers.append((endpoint, case, send(service.url, case)))
    wrong = [(e.route, case.name, problem(case, answer)) for e, case, answer in answers]
    wrong = [w for w in wrong if w[2] is not None]
    assert not wrong, wrong
    checked = 0
    for endpoint, case, answer in answers:
        expected = _expected(endpoint, case)
        if expected is not None:
            checked += 1
            assert (answer.status, expected[1] in answer.body.decode()) == (expected[0], True), (
                endpoint.route, case.name, answer.body[:300]
            )
    assert checked >= 40
    assert watched.connections == 0, "the service connected to a URL a client sent"
    # the app's refusals: JSON-shaped (a HEAD answer has no body); uvicorn's plain-text 400 for
    # broken HTTP is its own, logged by it as "Invalid HTTP request received."
    refused = [a for _, c, a in answers if a.error() or (c.method == "HEAD" and 400 <= a.status < 500)]
    assert len(refused) > 150  # the cases reach the checks they are written for
    log = _log_since(service, offset)
    assert "Traceback" not in log
    assert log.count(" refused 4") == len(refused)  # one line per refusal


def test_a_url_in_a_file_field_is_refused_without_a_connection(service: Server) -> None:
    with canary() as watched:
        for route, name in (("/count_field", "field"), ("/count_sample", "fields"), ("/classify", "crops")):
            url = f"{watched.url}/{name}.tif"
            answer = requests.post(f"{service.url}{route}", files={name: (None, url)}, timeout=60)
            assert answer.status_code == 400, answer.text
            body = answer.json()
            assert body["field"] == name and "not a file upload" in body["reason"]
            assert "never fetches a URL" in body["reason"] and f"{name}=@" in body["hint"]
        time.sleep(0.5)
    assert watched.connections == 0


def test_a_numeric_sample_name_reaches_the_answer_as_text(service: Server, packaged: Packaged) -> None:
    field: Path = packaged.field(0, 0)
    for name in ("2024017", "12.50", "[1, 2]", "null"):
        files = [("fields", (field.name, field.read_bytes())), ("sample", (None, name))]
        answer = requests.post(f"{service.url}/count_sample", files=files, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["sample"] == name


def test_the_form_is_checked_whatever_the_chunking(service: Server, packaged: Packaged) -> None:
    """A client that sends the body in small chunks (chunked transfer) gets the same answer."""
    endpoint = next(e for e in _endpoints(service) if e.route == "/count_sample")
    body = multipart([*good_parts(endpoint, packaged.field(0, 0).read_bytes())[:1], ("sample", None, b"77")])

    def pieces(size: int):
        for i in range(0, len(body), size):
            yield body[i : i + size]

    headers = {"Content-Type": "multipart/form-data; boundary=ctcid-boundary-7d1f"}
    for size in (7, 4096):
        answer = requests.post(f"{service.url}/count_sample", data=pieces(size), headers=headers, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["sample"] == "77"
