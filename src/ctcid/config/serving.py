"""The ``serving`` section: the BentoML service (docs/serving.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ctcid.config.base import Section


class ServingParams(Section):
    """The BentoML service: where it listens, what it accepts, how it batches (docs/serving.md).

    ``ctcid package`` bakes these into the Bento (as its build arguments), so a served Bento keeps
    the limits it was built with; change one, then package and restart.
    """

    # loopback by default: the service has no authentication, so exposing it is a decision
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # BentoML's model and Bento store, relative to the working directory (the repository root)
    bentoml_home: Annotated[str, Field(min_length=1)] = ".bentoml"
    # largest field side in pixels (checked from the TIFF header before any pixel is decoded)
    max_field_px: Annotated[int, Field(ge=64, le=65536)] = 4096
    max_upload_mb: Annotated[float, Field(gt=0.0, le=4096.0)] = 64.0
    max_crops: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    max_fields: Annotated[int, Field(ge=1, le=1000)] = 32  # fields per /count_sample request
    # adaptive batching of crop scoring across requests (/classify and the fields' crops)
    batching: bool = True
    max_batch_size: Annotated[int, Field(ge=2, le=100_000)] = 256
    max_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 2000
    # a request that runs longer is answered 504 by BentoML, and the worker goes on to the next
    timeout_s: Annotated[int, Field(ge=1, le=3600)] = 120
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # processes of the API service


