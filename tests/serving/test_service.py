"""The service over HTTP, started for real: every endpoint's answer, equal to ctcid's own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import requests
import tifffile
from service_support import Packaged, Server

from ctcid.intensity import field_levels
from ctcid.model.predict import load_model, score_crops
from ctcid.paths import MODEL_FILE
from ctcid.raw.fields import write_field

pytestmark = pytest.mark.service
BACKBONE = "alexnet"


def post_field(service: Server, path) -> requests.Response:
    with path.open("rb") as handle:
        return requests.post(f"{service.url}/count_field", files={"field": (path.name, handle)}, timeout=120)


def test_model_names_the_champion(service: Server, packaged: Packaged) -> None:
    answer = requests.get(f"{service.url}/model", timeout=30)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    registration = json.loads((packaged.reports / "registration.json").read_text())
    assert (info["name"], info["version"], info["alias"]) == (
        "ctcid-classifier",
        registration["version"],
        "champion",
    )
    assert info["run_id"] == registration["run_id"]
    assert info["backbone"] == BACKBONE
    assert info["segment"] == packaged.params.segment.model_dump(mode="json")
    assert 0 < info["operating_threshold"] < 1 and 0 < info["counting_threshold"] < 1
    assert info["metrics"]["test.auc"] and "test.auc.ci95" in info["metrics"]
    assert info["drift"]["threshold"] > 0 and info["drift"]["n_fields"] == 8


def test_count_field_answers_what_ctcid_predict_writes(service: Server, packaged: Packaged, tmp_path) -> None:
    field = packaged.field(0, 0)
    answer = post_field(service, field)
    assert answer.status_code == 200, answer.text
    served = answer.json()
    done = packaged.ctcid("predict", str(field), "--sample", "S0000", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    offline = json.loads((tmp_path / "S0000.json").read_text())
    cells = pd.read_csv(tmp_path / "S0000_cells.csv")

    assert served["field"] == field.name and served["cells"] > 5
    assert offline["per_field"] == [
        {k: served[k] for k in ("field", "cells", "ctc_count", "ctc_flagged", "rule_count", "drift_flag")}
    ]
    assert offline["drift_flag"] == served["drift_flag"]
    table = pd.DataFrame(served["cell_table"])
    np.testing.assert_allclose(table["ctc_probability"], cells["ctc_probability"], atol=1e-5)
    for column in ("cell", "x0", "y0", "x1", "y1", "cep8_spots", "ctc", "counted", "rule_ctc"):
        assert table[column].tolist() == cells[column].tolist(), column
    assert served["rule_count"] == int(table["rule_ctc"].sum())
    assert (tmp_path / "f000_overlay.png").stat().st_size > 1000


def test_a_field_from_another_scanner_is_flagged(service: Server, packaged: Packaged, tmp_path) -> None:
    usual = post_field(service, packaged.field(1, 0)).json()
    # the same specimen through a brighter, noisier camera: the cells are all still there
    image = tifffile.imread(packaged.field(1, 0)).astype(np.float64)
    noisy = image * 1.8 + np.random.default_rng(0).normal(0.0, 60.0, image.shape)
    shifted = tmp_path / "f000.tif"
    write_field(shifted, np.clip(noisy, 0, 65535).astype(np.uint16), packaged.params.channels)
    answer = post_field(service, shifted)
    assert answer.status_code == 200, answer.text
    flagged = answer.json()

    assert usual["drift_score"] is not None and not usual["drift_flag"]
    assert flagged["drift_flag"] and flagged["drift_score"] > 3 * usual["drift_score"]
    assert "_noise" in flagged["drift_reason"] or "_background" in flagged["drift_reason"]
    assert flagged["drift_kind"] == "imaging" and usual["drift_kind"] == ""
    assert "unlike the model's training fields" in flagged["note"] and "scanner" in flagged["note"]
    done = packaged.ctcid("predict", str(shifted), "--sample", "S0001", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "unfamiliar field" in done.stderr and "looks unlike" in done.stderr
    assert json.loads((tmp_path / "out" / "S0001.json").read_text())["drift_flag"] is True


def test_count_field_takes_one_file_per_channel(service: Server, packaged: Packaged, tmp_path) -> None:
    field = packaged.field(1, 0)
    image = tifffile.imread(field)
    handles = []
    for index, channel in enumerate(packaged.params.channels):
        path = tmp_path / f"f000_{channel.lower()}.tif"
        tifffile.imwrite(path, image[index])
        handles.append(("field", (path.name, path.read_bytes())))
    split = requests.post(f"{service.url}/count_field", files=handles, timeout=120)
    whole = post_field(service, field)
    assert split.status_code == 200, split.text
    assert split.json()["field"] == "f000"
    assert [c["ctc_probability"] for c in split.json()["cell_table"]] == pytest.approx(
        [c["ctc_probability"] for c in whole.json()["cell_table"]], abs=1e-5
    )


def test_count_sample_adds_the_fields_and_lists_the_bad_one(
    service: Server, packaged: Packaged, tmp_path
) -> None:
    good = [packaged.field(0, 0), packaged.field(0, 1)]
    bad = tmp_path / "broken.tif"
    bad.write_bytes(good[0].read_bytes()[:600])
    files = [("fields", (p.name, p.read_bytes())) for p in [*good, bad]]
    answer = requests.post(f"{service.url}/count_sample", files=files, data={"sample": "S0000"}, timeout=120)
    assert answer.status_code == 200, answer.text
    sample = answer.json()
    singles = [post_field(service, p).json() for p in good]
    assert sample["sample"] == "S0000"
    assert (sample["fields_sent"], sample["fields_used"]) == (3, 2)
    assert sample["ctc_count"] == sum(s["ctc_count"] for s in singles)
    assert sample["cells"] == sum(s["cells"] for s in singles)
    assert [p["field"] for p in sample["problems"]] == ["broken.tif"]
    assert sample["problems"][0]["status"] in (415, 422)


def test_classify_scores_crops_as_the_trained_model_does(service: Server, packaged: Packaged) -> None:
    crops = np.load(packaged.crops)[:64]
    loaded = load_model(packaged.models / BACKBONE / MODEL_FILE)
    assert loaded.info.standardise
    for batch in (crops[:1], crops):
        answer = requests.post(
            f"{service.url}/classify", files={"crops": ("crops.npy", _npy(batch))}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        # the request's crops are one field: standardised by the levels they give together
        expected = score_crops(loaded, batch, levels=field_levels(batch))
        result = answer.json()
        np.testing.assert_allclose(result["ctc_probability"], expected, atol=1e-5)
        assert result["ctc"] == [bool(p >= result["operating_threshold"]) for p in result["ctc_probability"]]


def test_classify_answers_the_same_for_crops_imaged_at_another_exposure(
    service: Server, packaged: Packaged
) -> None:
    crops = np.load(packaged.crops)[:64]
    # another site: 1.7x the exposure on a brighter slide (every count scaled, 400 counts added)
    brighter = np.clip(crops.astype(np.float64) * 1.7 + 400, 0, 65535).astype(np.uint16)
    answers = [
        requests.post(f"{service.url}/classify", files={"crops": ("c.npy", _npy(b))}, timeout=120).json()
        for b in (crops, brighter)
    ]
    np.testing.assert_allclose(answers[1]["ctc_probability"], answers[0]["ctc_probability"], atol=0.02)
    assert answers[1]["ctc"] == answers[0]["ctc"]


def test_the_swagger_page_loads_only_from_the_service(service: Server) -> None:
    from ctcid.serving.index_page import CONTENT_SECURITY_POLICY

    page = requests.get(f"{service.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "swagger-ui" in page.text and "googletagmanager" not in page.text
    assert requests.get(f"{service.url}/static_content/swagger-ui-bundle.js", timeout=10).status_code == 200
    assert requests.head(f"{service.url}/", timeout=10).status_code == 200


def test_bentoml_endpoints_stay_on_and_document_every_route(service: Server) -> None:
    assert requests.get(f"{service.url}/livez", timeout=10).status_code == 200
    assert requests.get(f"{service.url}/readyz", timeout=10).status_code == 200
    metrics = requests.get(f"{service.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "bentoml_service_request" in metrics.text
    spec = requests.get(f"{service.url}/docs.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    for route, method in (
        ("/count_field", "post"),
        ("/count_sample", "post"),
        ("/classify", "post"),
        ("/model", "get"),
    ):
        operation = spec["paths"][route][method]
        assert operation.get("description") or operation.get("summary"), route
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        if "$ref" in answer:  # FastAPI's route refers to its schema, BentoML's inline it
            answer = schemas[answer["$ref"].rsplit("/", 1)[-1]]
        assert "example" in answer, route


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_the_python_client_of_the_docs(service: Server, packaged: Packaged) -> None:
    import bentoml

    fields = sorted((packaged.fields / "S0000").glob("*.tif"))
    with bentoml.SyncHTTPClient(service.url) as client:
        field = client.count_field(field=[fields[0]])
        sample = client.count_sample(fields=fields, sample="S0000")
    assert field["model"] == sample["model"] and field["cells"] > 0
    assert sample["fields_used"] == len(fields) and sample["problems"] == []
    assert sample["per_field"][0]["ctc_count"] == field["ctc_count"]
