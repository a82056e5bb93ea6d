"""The serving pieces that need no server: upload names, the served model's facts, crop files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctcid.config.segment import SegmentParams
from ctcid.config.serving import ServingParams
from ctcid.errors import CtcidError, InputRejected
from ctcid.serving.http import field_name, upload_name
from ctcid.serving.served import ServedModel
from ctcid.serving.uploads import check_usable, read_crops_file


def test_upload_names_lose_bentomls_temporary_prefix() -> None:
    assert upload_name(Path("/tmp/bentoml-request-x/tmpab_3k9z1f000.tif")) == "f000.tif"
    assert upload_name(Path("/data/f000.tif")) == "f000.tif"
    channels = {f"p7_f3_{c}.tif": Path() for c in ("dapi", "cep8", "cd45")}
    assert field_name(channels) == "p7_f3"
    assert field_name({"a.tif": Path(), "b.tif": Path()}) == "field"


def test_crops_are_checked_from_the_header(tmp_path: Path) -> None:
    limits = ServingParams(max_crops=10)
    path = tmp_path / "crops.npy"
    np.save(path, np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 3, 8, 8))
    crops = read_crops_file(path, 3, 8, limits)
    assert crops.dtype == np.float32 and crops.shape == (2, 3, 8, 8)
    np.save(path, np.zeros((11, 3, 8, 8), np.uint8))
    with pytest.raises(InputRejected) as refused:
        read_crops_file(path, 3, 8, limits)
    assert refused.value.status == 413 and "serving.max_crops 10" in str(refused.value)


def test_an_uploaded_field_at_full_scale_is_refused_as_saturated_and_a_dark_one_as_dark() -> None:
    seg = SegmentParams(crop_size=24)
    channels = ["DAPI", "CEP8", "CD45"]
    with pytest.raises(InputRejected) as refused:
        check_usable(np.full((3, 64, 64), 65535, np.uint16), "white.tif", seg, channels)
    assert refused.value.status == 422 and refused.value.field == "white.tif"
    assert "DAPI channel saturated: 100.0% of pixels at 65535" in str(refused.value)
    assert "Shorten the exposure" in refused.value.hint
    with pytest.raises(InputRejected) as refused:
        check_usable(np.full((3, 64, 64), 100, np.uint16), "dark.tif", seg, channels)
    assert "DAPI channel is dark" in str(refused.value) and "lamp" in refused.value.hint


def test_a_version_without_segmentation_settings_is_refused() -> None:
    version = SimpleNamespace(name="m", version="4", tags={}, run_id="r")
    with pytest.raises(CtcidError, match="version 4 of 'm' was registered without its segmentation"):
        ServedModel.from_version(version, "champion", {"backbone": "alexnet"})  # type: ignore[arg-type]


def test_the_swagger_page_loses_bentomls_tag_manager_and_nothing_else() -> None:
    from ctcid.serving.index_page import bentoml_index, offline_page

    original = bentoml_index().read_text()
    assert "googletagmanager" in original  # what BentoML 1.4 ships, and why the middleware exists
    page = offline_page(original)
    assert "googletagmanager" not in page and "GTM-" not in page
    for kept in ('<div id="swagger-ui">', "./static_content/swagger-ui-bundle.js", "swagger-initializer.js"):
        assert kept in page


def test_a_swagger_page_with_another_remote_script_is_refused() -> None:
    from ctcid.serving.index_page import offline_page

    with pytest.raises(CtcidError, match="https://cdn.example.org/x.js"):
        offline_page('<html><head><script src="https://cdn.example.org/x.js"></script></head></html>')
