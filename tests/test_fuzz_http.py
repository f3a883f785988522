"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis), against the real
gateway over real HTTP with the real Triton behind it.

Every operation gets `FUZZ_HTTP_EXAMPLES` generated requests (500 unless lowered; operations with
nothing to vary, such as `GET /health/live`, get the few that exist; the tenants' routes 50, the files
and batches routes 100), valid ones and ones that break
the schema on purpose (schemathesis' positive and negative modes); multipart audio fields get random
bytes. Each response must be no 5xx, match the status codes and schemas the document declares, and
every 4xx must carry the gateway's error body (`gateway/http/errors.py`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.errors import ErrorType
from gateway.http.app import create_app
from samo.settings import GatewaySettings
from tests.conftest import Gateway

EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "500"))
"""Generated requests per operation; lower it (e.g. `FUZZ_HTTP_EXAMPLES=50`) for a quick local run."""

ERROR_TYPES = {t.value for t in ErrorType}
SENT: Counter[str] = Counter()
"""Requests sent per operation, read by the last test to show the fuzz really ran."""


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def has_error_body(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every 4xx carries `{"error": {"type": <ErrorType>, "message": <non-empty>, "request_id": ...}}`."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == {"error"}, f"{response.status_code} without the error body: {body}"
        error = body["error"]
        assert error["type"] in ERROR_TYPES, error
        assert isinstance(error["message"], str) and error["message"].strip(), error
        assert error["request_id"] == response.headers["x-request-id"][0], error
    return True


def no_server_error(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    return True


TENANT_EXAMPLES = min(EXAMPLES, 50)
"""The tenants' routes (managed keys, usage) on the session's gateway, which has no database and no
admin caller: the gate and validation answer (403, 404, 422) without reaching a model, so fewer suffice."""
TENANTS = "tenants"
STORE_EXAMPLES = min(EXAMPLES, 100)
"""The files and batches routes: they answer from the batch store (validation, unknown IDs, uploads that
are kept or refused) without reaching a model; what a file's content may hold has its own tests
(`tests/test_batch_input_limits.py`), so fewer than the model routes suffice."""
BATCHES = "batches"

# The document of an app built with the default settings, as the session's gateway is (only its ports
# differ); building it starts nothing.
schema = schemathesis.openapi.from_dict(create_app(settings=GatewaySettings(grpc_port=0)).openapi())
model_schema = schema.exclude(tag=TENANTS).exclude(tag=BATCHES)
tenant_schema = schema.include(tag=TENANTS)
store_schema = schema.include(tag=BATCHES)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,  # real inference on a shared 2-core machine: timing is not what is tested
        suppress_health_check=list(HealthCheck),
        database=None,  # no example database written into the working tree
    )


@model_schema.parametrize()
@fuzz_settings(EXAMPLES)
def test_generated_requests_get_no_5xx_and_documented_answers(
    case: schemathesis.Case, gateway: Gateway, session: requests.Session
) -> None:
    _fuzzed(case, gateway, session)


@tenant_schema.parametrize()
@fuzz_settings(TENANT_EXAMPLES)
def test_generated_tenant_requests_get_no_5xx_and_documented_answers(
    case: schemathesis.Case, gateway: Gateway, session: requests.Session
) -> None:
    _fuzzed(case, gateway, session)


@store_schema.parametrize()
@fuzz_settings(STORE_EXAMPLES)
def test_generated_store_requests_get_no_5xx_and_documented_answers(
    case: schemathesis.Case, gateway: Gateway, session: requests.Session
) -> None:
    _fuzzed(case, gateway, session)


def _fuzzed(case: schemathesis.Case, gateway: Gateway, session: requests.Session) -> None:
    response = case.call(base_url=gateway.http_url, session=session, timeout=120)
    SENT[f"{case.method} {case.path}"] += 1
    case.validate_response(
        response,
        checks=[
            no_server_error,
            has_error_body,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_every_operation_was_fuzzed(gateway: Gateway) -> None:
    """Runs after the fuzz in this module: each operation with inputs got `EXAMPLES` requests. (It takes
    the fuzz's gateway so that it runs in the fuzz's tier.)"""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        has_inputs = operation.body or any(True for _ in operation.iter_parameters())
        tags = operation.tags or ()
        examples = TENANT_EXAMPLES if TENANTS in tags else STORE_EXAMPLES if BATCHES in tags else EXAMPLES
        expected = examples if has_inputs else 1
        assert SENT[label] >= expected, (label, SENT[label], dict(SENT))
    print(f"requests per operation: {dict(SENT)}")  # shown with -s
