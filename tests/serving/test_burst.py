"""A bounded burst of concurrent requests, a fifth of them malformed: no 5xx, right answers."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from service_support import Packaged, Server

from ctcid.intensity import field_levels
from ctcid.model.predict import load_model, score_crops
from ctcid.paths import MODEL_FILE

pytestmark = pytest.mark.service
REQUESTS = 250
BAD_EVERY = 5  # one request in five is malformed


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_burst_gets_no_5xx_and_right_answers(service: Server, packaged: Packaged) -> None:
    crops = np.load(packaged.crops)
    loaded = load_model(packaged.models / "alexnet" / MODEL_FILE)
    rng = np.random.default_rng(0)
    # each /classify request's crops are one field to the service: their levels are their own
    picks = [rng.choice(len(crops), size=int(rng.integers(1, 40)), replace=False) for _ in range(REQUESTS)]
    expected = [score_crops(loaded, crops[rows], levels=field_levels(crops[rows])) for rows in picks]
    field = packaged.field(0, 1)
    reference = requests.post(
        f"{service.url}/count_field", files={"field": (field.name, field.read_bytes())}, timeout=120
    ).json()

    def call(i: int) -> tuple[int, str]:
        if i % BAD_EVERY == 0:  # malformed: alternately bad crops and a field that is no TIFF
            if i % 2:
                bad = _npy(np.zeros((3, 3, 7, 7), np.float32))
                answer = requests.post(
                    f"{service.url}/classify", files={"crops": ("c.npy", bad)}, timeout=300
                )
            else:
                answer = requests.post(
                    f"{service.url}/count_field", files={"field": ("x.tif", b"junk" * 50)}, timeout=300
                )
            return answer.status_code, "bad" if 400 <= answer.status_code < 500 else answer.text
        if i % 25 == 1:
            answer = requests.post(
                f"{service.url}/count_field", files={"field": (field.name, field.read_bytes())}, timeout=300
            )
            same = answer.ok and answer.json()["cell_table"] == reference["cell_table"]
            return answer.status_code, "ok" if same else answer.text
        rows = picks[i]
        answer = requests.post(
            f"{service.url}/classify", files={"crops": ("c.npy", _npy(crops[rows]))}, timeout=300
        )
        same = answer.ok and np.allclose(answer.json()["ctc_probability"], expected[i], atol=1e-5)
        return answer.status_code, "ok" if same else answer.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(REQUESTS)))
    statuses = [status for status, _ in results]
    assert not [s for s in statuses if s >= 500], [r for r in results if r[0] >= 500][:3]
    assert sum(1 for s in statuses if 400 <= s < 500) == REQUESTS // BAD_EVERY
    wrong = [text for status, text in results if status == 200 and text != "ok"]
    assert not wrong, wrong[:3]
    assert statuses.count(200) == REQUESTS - REQUESTS // BAD_EVERY
