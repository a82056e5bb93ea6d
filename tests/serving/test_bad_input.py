"""Every kind of bad input gets its 4xx and a message naming what was wrong and what is accepted."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
import tifffile
from service_support import Packaged, Server

pytestmark = pytest.mark.service


def _tiff(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, photometric="minisblack", **options)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _field(packaged: Packaged) -> np.ndarray:
    return tifffile.imread(packaged.field(0, 0))


FieldCase = Callable[[Packaged], list[tuple[str, bytes]]]

FIELD_CASES: dict[str, tuple[FieldCase, int, str]] = {
    "not a TIFF": (lambda p: [("notes.txt", b"not an image at all, just text\n" * 20)], 415, "is not a TIFF"),
    "truncated TIFF": (lambda p: [("cut.tif", p.field(0, 0).read_bytes()[:5000])], 422, "cut.tif"),
    "two channels": (lambda p: [("two.tif", _tiff(_field(p)[:2]))], 422, "has 2 channels"),
    "float pixels": (
        lambda p: [("float.tif", _tiff(_field(p).astype(np.float32)))],
        422,
        "pixel type float32",
    ),
    "signed pixels": (lambda p: [("signed.tif", _tiff(_field(p).astype(np.int16)))], 422, "pixel type int16"),
    "field too large": (
        lambda p: [("huge.tif", _tiff(np.zeros((3, 1100, 1100), np.uint16), compression="zlib"))],
        413,
        "serving.max_field_px 1024",
    ),
    "upload too large": (
        lambda p: [("big.tif", np.random.default_rng(0).bytes(5 * 2**20))],
        413,
        "max_upload_mb",
    ),
    "all-dark field": (
        lambda p: [("dark.tif", _tiff(np.full((3, 192, 192), 100, np.uint16)))],
        422,
        "DAPI channel is dark",
    ),
    "empty file": (lambda p: [("empty.tif", b"")], 400, "empty file"),
    "two files": (
        lambda p: [("a.tif", p.field(0, 0).read_bytes()), ("b.tif", p.field(0, 1).read_bytes())],
        400,
        "2 files",
    ),
    "unmatched channel files": (
        lambda p: [(f"x_{i}.tif", _tiff(_field(p)[i])) for i in range(3)],
        400,
        "channel map",
    ),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_count_field_refuses(case: str, service: Server, packaged: Packaged) -> None:
    make, status, message = FIELD_CASES[case]
    files = [("field", (name, content)) for name, content in make(packaged)]
    answer = requests.post(f"{service.url}/count_field", files=files, timeout=120)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert message in body["error"], body
    assert body["hint"] or status == 413 and body["field"] == "request"


CROP = 24
CROP_CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "wrong crop size": (lambda: _npy(np.zeros((2, 3, 40, 40), np.uint16)), 422, "expected N x 3 x 24 x 24"),
    "wrong channels": (
        lambda: _npy(np.zeros((2, 4, CROP, CROP), np.uint16)),
        422,
        "expected N x 3 x 24 x 24",
    ),
    "too many crops": (lambda: _npy(np.zeros((301, 3, CROP, CROP), np.uint8)), 413, "serving.max_crops 300"),
    "no crops": (lambda: _npy(np.zeros((0, 3, CROP, CROP), np.uint16)), 422, "holds no crops"),
    "not numbers": (lambda: _npy(np.array(["a", "b"])), 422, "expected numbers"),
    "NaN": (lambda: _npy(np.full((1, 3, CROP, CROP), np.nan, np.float32)), 422, "NaN"),
    "not an npy": (lambda: b"crops,as,csv\n1,2,3\n", 415, "not a NumPy .npy file"),
    "truncated npy": (lambda: _npy(np.ones((50, 3, CROP, CROP), np.float32))[:3000], 422, "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(CROP_CASES))
def test_classify_refuses(case: str, service: Server) -> None:
    make, status, message = CROP_CASES[case]
    answer = requests.post(f"{service.url}/classify", files={"crops": ("crops.npy", make())}, timeout=120)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"], answer.text


def test_malformed_requests_get_400(service: Server) -> None:
    assert requests.post(f"{service.url}/count_field", timeout=30).status_code == 400
    assert requests.post(f"{service.url}/classify", json={"crops": [1, 2]}, timeout=30).status_code == 400
    assert requests.post(f"{service.url}/count_sample", data="{{{", timeout=30).status_code == 400


def test_count_sample_refuses_too_many_fields_and_all_bad_ones(service: Server, packaged: Packaged) -> None:
    field = packaged.field(0, 0).read_bytes()
    many = [("fields", (f"f{i}.tif", field)) for i in range(5)]
    answer = requests.post(f"{service.url}/count_sample", files=many, timeout=120)
    assert answer.status_code == 413 and "serving.max_fields 4" in answer.json()["error"]
    bad = [("fields", ("a.tif", b"junk" * 100)), ("fields", ("b.tif", b"more junk" * 100))]
    answer = requests.post(f"{service.url}/count_sample", files=bad, timeout=120)
    assert answer.status_code == 422
    assert "a.tif" in answer.json()["hint"] and "b.tif" in answer.json()["hint"]


def test_the_service_is_still_healthy_after_bad_input(service: Server, packaged: Packaged) -> None:
    path: Path = packaged.field(1, 1)
    answer = requests.post(
        f"{service.url}/count_field", files={"field": (path.name, path.read_bytes())}, timeout=120
    )
    assert answer.status_code == 200
    # BentoML logs each refused request; none was answered 5xx
    assert "status=5" not in service.log.read_text()
