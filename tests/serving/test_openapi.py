"""Property-based requests from the service's own OpenAPI document (schemathesis), for every operation.

Both kinds schemathesis generates: requests that fit the schema and requests that break it
(wrong types, missing parts, stray values). Checks: no server error, and every answer the document
describes conforms to its schema. Bounded: ``EXAMPLES`` per operation and kind, derandomized (a
failure reproduces), and a time limit for the test.

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) sets ``item._nodeid``,
which pytest 9.2 no longer has, so each operation runs here as a Hypothesis test of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.service
EXAMPLES = 60  # per operation and generation mode


@pytest.fixture
def ieee_floats() -> Iterator[None]:
    """Subnormal floats for Hypothesis, which refuses to run without them.

    Training turns flush-to-zero on for the whole process (``trainer.flush_denormals``, for speed),
    and the session's champion was trained in this process; it is put back as it was.
    """
    tiny = sys.float_info.min
    flushing = tiny / 2 == 0.0
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(flushing)


def _run(operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str, seen: list[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        database=None,  # nothing written to .hypothesis/ in the repository
        suppress_health_check=list(HealthCheck),
    )
    def requests_of_this_operation(case: schemathesis.Case) -> None:
        answer = case.call_and_validate(
            base_url=base_url, checks=[not_a_server_error, response_schema_conformance], timeout=120
        )
        seen.append(answer.status_code)

    requests_of_this_operation()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_generated_request_gets_a_server_error(
    served_openapi: schemathesis.BaseSchema, mode: GenerationMode, ieee_floats: None
) -> None:
    operations = [result.ok() for result in served_openapi.get_all_operations()]
    routes = {operation.path for operation in operations}
    assert {"/count_field", "/count_sample", "/classify", "/model"} <= routes
    failures, seen, nothing_to_break = [], [], set()
    for operation in operations:
        try:
            _run(operation, mode, served_openapi.config.base_url or "", seen)
        except Unsatisfiable:  # a GET without parameters has no request that breaks its schema
            if mode != GenerationMode.NEGATIVE:
                raise
            nothing_to_break.add(operation.path)
        except Exception as error:  # noqa: BLE001 (every operation is tried; all failures are reported)
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
    assert not nothing_to_break & {"/count_field", "/count_sample", "/classify"}
    assert len(seen) >= 3 * EXAMPLES and max(seen) < 500
