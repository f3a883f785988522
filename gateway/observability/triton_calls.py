"""What every call to Triton records: the request ID Triton is given, a client span, latency and errors
by model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.errors import ErrorType, SamoError
from gateway.observability.metrics import TRITON_ERRORS, TRITON_LATENCY, labelled
from gateway.observability.tracing import REQUEST_ID_ATTRIBUTE, begin_client_span, end_client_span


@dataclass(frozen=True)
class TritonCall:
    request_id: str
    """Triton's inference request ID: the gateway request's, so Triton's logs and traces name it."""
    headers: dict[str, str] | None
    """gRPC metadata carrying the trace context (W3C `traceparent`) when tracing is on."""


@contextmanager
def triton_call(model: str, request_id: str | None, kind: str = "infer") -> Iterator[TritonCall]:
    """Around one Triton call (for the request `request_id`) that raises `SamoError` on failure. A call
    cancelled or abandoned (client gone, stream closed early) counts neither as an answer nor as an
    error."""
    request_id = request_id or ""
    span, headers = begin_client_span(
        f"triton.{kind}", {"samo.model": model, REQUEST_ID_ATTRIBUTE: request_id}
    )
    start = time.perf_counter()
    error: str | None = None
    finished = False
    try:
        yield TritonCall(request_id, headers)
        finished = True
    except SamoError as exc:
        error = exc.type.value
        raise
    except Exception:
        error = ErrorType.INTERNAL.value
        raise
    finally:
        if finished or error is not None:
            labelled(TRITON_LATENCY, model).observe(time.perf_counter() - start)
        if error is not None:
            labelled(TRITON_ERRORS, model, error).inc()
        end_client_span(span, error)
