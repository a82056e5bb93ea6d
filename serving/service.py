"""ctcid's BentoML service: the registry's champion counts CTCs in whole imFISH fields.

Two services in one Bento. ``CtcScorer`` holds the network and scores crops with adaptive batching
(crops of concurrent requests share a batch); ``CtcService`` is what clients call: it reads and
checks uploads, segments fields with the settings the model was trained with and asks the scorer.
Everything here is wiring: the reading, segmentation and counting are ctcid's own functions, the
same ones ``ctcid predict`` runs offline. docs/serving.md documents endpoints, limits and errors.

Built by ``ctcid package``, which passes the model's tag and the ``serving`` params as the Bento's
arguments; started by ``ctcid serve``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI
from pydantic import BaseModel, Field

from ctcid.errors import InputRejected
from ctcid.intensity import model_input
from ctcid.serving.bento import ServiceArgs, probabilities, served_of
from ctcid.serving.counting import (
    FieldCount,
    SampleCount,
    field_count,
    prepare_field,
    problem_of,
    sample_count,
)
from ctcid.serving.forms import form_specs
from ctcid.serving.guard import RequestGuard
from ctcid.serving.http import field_name, rejection, upload_name
from ctcid.serving.index_page import OfflineIndex
from ctcid.serving.served import ServedModel
from ctcid.serving.uploads import read_crops_file

ARGS = bentoml.use_arguments(ServiceArgs)
MODEL = bentoml.models.BentoModel(ARGS.model_tag)
# the API answers 429 beyond 64 requests in flight; the scorer takes whatever the API sends it
TRAFFIC = {"timeout": ARGS.timeout_s, "max_concurrency": 64}
RETRIES = 6  # scorer calls shed under load are retried, with a doubling pause from 50 ms
SCORE_TIMEOUT_S = max(10.0, 5 * ARGS.max_latency_ms / 1000)  # one slice normally takes < 1 s

info_app = FastAPI(title="ctcid")
FIELD_HELP = (
    "one multi-channel TIFF / OME-TIFF (DAPI, CEP8, CD45), or one single-channel TIFF per channel "
    "named as channel_map says"
)
CHANNEL_MAP_HELP = (
    "for single-channel files, ctcid ingest's syntax: DAPI=*_dapi.tif,CEP8=*_cep8.tif,CD45=*_cd45.tif "
    "(default: file stems ending _dapi, _cep8, _cd45)"
)


class Classified(BaseModel):
    model: str = Field(description="name and version of the model")
    operating_threshold: float
    ctc_probability: list[float] = Field(description="one per crop, in the order sent")
    ctc: list[bool] = Field(description="called CTC at the operating threshold")

    model_config = {
        "json_schema_extra": {
            "example": {
                "model": "ctcid-classifier v3",
                "operating_threshold": 0.42,
                "ctc_probability": [0.013, 0.987],
                "ctc": [False, True],
            }
        }
    }


@bentoml.service(name="ctcid-scorer", workers=1, traffic={"timeout": ARGS.timeout_s})
class CtcScorer:
    """The network: crops in, CTC probabilities out, batched across requests."""

    bento_model = MODEL

    def __init__(self) -> None:
        self.model = bentoml.mlflow.load_model(self.bento_model)

    @bentoml.api(
        batchable=ARGS.batching, max_batch_size=ARGS.max_batch_size, max_latency_ms=ARGS.max_latency_ms
    )
    def score(self, crops: np.ndarray) -> np.ndarray:
        return probabilities(self.model, crops)


@bentoml.service(name="ctcid", workers=ARGS.workers, traffic=TRAFFIC)
@bentoml.asgi_app(info_app, path="/")
class CtcService:
    """Fields and crops in, CTC calls and counts out."""

    scorer = bentoml.depends(CtcScorer)
    bento_model = MODEL

    def __init__(self) -> None:
        self.served: ServedModel = served_of(self.bento_model)

    async def _score(self, crops: np.ndarray) -> np.ndarray:
        """Crops in slices of at most max_batch_size, scored concurrently by the scorer."""
        if len(crops) == 0:
            return np.empty(0, dtype=np.float64)
        size = ARGS.max_batch_size
        parts = await asyncio.gather(
            *(self._score_slice(crops[i : i + size]) for i in range(0, len(crops), size))
        )
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])

    async def _score_slice(self, crops: np.ndarray) -> np.ndarray:
        # Scoring is idempotent, so a slice is sent again when BentoML's batcher sheds it (503 past
        # max_latency_ms), when the scorer's socket drops a kept-alive connection, or when no answer
        # comes within SCORE_TIMEOUT_S (seen once in a few thousand calls under a burst on 2 cores)
        for attempt in range(RETRIES):
            try:
                return await asyncio.wait_for(self.scorer.to_async.score(crops), SCORE_TIMEOUT_S)
            except (ServiceUnavailable, aiohttp.ClientConnectionError, TimeoutError):
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _count(self, files: list[Path], channel_map: str | None = None) -> FieldCount:
        named = {upload_name(path): path for path in files}
        name = next(iter(named)) if len(named) == 1 else field_name(named)
        cut = await asyncio.to_thread(prepare_field, name, named, self.served, ARGS, channel_map)
        return field_count(name, cut, await self._score(cut.crops), self.served)

    @bentoml.api(route="/count_field")
    async def count_field(
        self,
        field: Annotated[list[Path], Field(description=FIELD_HELP)],
        channel_map: Annotated[str, Field(description=CHANNEL_MAP_HELP)] = "",
    ) -> FieldCount:
        """Count CTCs in one field: the model's and the rule's counts and a row per cell."""
        try:
            return await self._count(field, channel_map or None)
        except InputRejected as error:
            return rejection(error)

    @bentoml.api(route="/count_sample")
    async def count_sample(
        self,
        fields: Annotated[list[Path], Field(description="the patient's fields, one multi-channel TIFF each")],
        sample: Annotated[str, Field(description="the sample's name, echoed back")] = "sample",
    ) -> SampleCount:
        """Count one patient's CTCs over several fields; unusable fields are listed, not fatal."""
        if len(fields) > ARGS.max_fields:
            return rejection(
                InputRejected(
                    413,
                    "fields",
                    f"{len(fields)} fields, more than serving.max_fields {ARGS.max_fields}",
                    "Send the sample in several requests and add the counts",
                )
            )
        results, problems = [], []
        for path in fields:
            name = upload_name(path)
            try:
                results.append(await self._count([path]))
            except InputRejected as error:
                problems.append(problem_of(name, error))
        if not results:
            error = InputRejected(
                422,
                "fields",
                "no field of the sample could be used",
                "; ".join(f"{p.field}: {p.reason}" for p in problems),
            )
            return rejection(error)
        return sample_count(sample, results, problems, self.served)

    @bentoml.api(route="/classify")
    async def classify(
        self,
        crops: Annotated[
            Path,
            Field(
                description="a .npy array of crops of one field (or one slide), N x C x S x S raw "
                "intensities; their intensity levels are estimated from them together"
            ),
        ],
    ) -> Classified:
        """CTC probability and call of each crop (crops cut as GET /model's crop_size says).

        Send the crops of one field or slide per request: a model that reads standardised crops
        takes the background and scale of the request's crops together, as segmentation does for
        one field's cells.
        """
        served = self.served
        try:
            array = await asyncio.to_thread(
                read_crops_file, crops, len(served.channels), served.crop_size, ARGS
            )
        except InputRejected as error:
            return rejection(error)
        scores = await self._score(model_input(array, None, served.standardise))
        return Classified(
            model=served.label,
            operating_threshold=served.operating_threshold,
            ctc_probability=scores.tolist(),
            ctc=(scores >= served.operating_threshold).tolist(),
        )

    @info_app.get("/model", response_model=ServedModel, summary="The served model")
    def model(self) -> ServedModel:
        """Name, version, alias, backbone, thresholds, training data hash, commit and headline metrics."""
        return self.served


# the Swagger UI at / without BentoML's Google Tag Manager: the page loads nothing from outside
CtcService.add_asgi_middleware(OfflineIndex)
# every request is checked against its endpoint's form before BentoML parses it (guard.py)
CtcService.add_asgi_middleware(
    RequestGuard,
    forms=form_specs(CtcService.apis),
    max_bytes=int(ARGS.max_upload_mb * 2**20),
    stall_s=min(30.0, ARGS.timeout_s / 2),
)
