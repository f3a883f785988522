"""Optional OpenTelemetry tracing: spans for each request, its stages and its Triton calls, sent to an
OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo ...).

Off unless `SAMO_OTLP_ENDPOINT` or the standard `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set; off, a
span costs one flag check. The SDK's standard variables apply too (`OTEL_SERVICE_NAME`,
`OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS` ...). Span attributes are names, counts and sizes:
never entry text, audio or keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

SERVICE_NAME = "samo-gateway"
STANDARD_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
REQUEST_ID_ATTRIBUTE = "samo.request_id"

_tracer: trace.Tracer | None = None
"""The tracer of this process's provider while tracing is on; None while it is off."""


def start_tracing(endpoint: str | None) -> TracerProvider | None:
    """Send spans to `endpoint` (the receiver's base URL; spans go to `<endpoint>/v1/traces`), or to the
    standard OTLP variables' endpoint; returns the provider to `stop_tracing`, or None when tracing is off.

    The provider is this module's own, not OpenTelemetry's global one, so a process can start and stop
    tracing more than once (tests run several gateways in one process).
    """
    global _tracer
    if endpoint is None and not any(os.environ.get(name) for name in STANDARD_ENDPOINT_VARIABLES):
        return None
    # The SDK loads with tracing: a gateway without it does not pay for the import.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = provider.get_tracer("gateway")
    logger.info("tracing: spans go to %s", endpoint or "the OTEL_EXPORTER_OTLP_* endpoint")
    return provider


def stop_tracing(provider: TracerProvider | None) -> None:
    """Flush the spans still queued and stop sending."""
    global _tracer
    if provider is not None:
        _tracer = None
        provider.shutdown()


def tracing_enabled() -> bool:
    return _tracer is not None


def begin_server_span(name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]) -> Span | None:
    """The span of one HTTP request or gRPC call, continuing the client's trace (W3C `traceparent`),
    made current for the rest of this task, so stage and Triton spans become its children.

    Not detached at the end: each request runs in a task of its own (see `bind_request_id`).
    """
    if _tracer is None:
        return None
    parent = propagate.extract(carrier)
    span = _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    otel_context.attach(trace.set_span_in_context(span, parent))
    return span


def end_server_span(span: Span | None, *, failed: bool, attributes: Mapping[str, Any]) -> None:
    if span is None:
        return
    span.set_attributes(attributes)
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextmanager
def stage(name: str, **attributes: Any) -> Iterator[None]:
    """A span around one stage of a request (tokenize, decode, VAD, post-process ...); attributes are
    recorded as `samo.<name>`."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes={f"samo.{k}": v for k, v in attributes.items()}):
        yield


def begin_client_span(name: str, attributes: Mapping[str, Any]) -> tuple[Span | None, dict[str, str] | None]:
    """A span around a call out of the gateway (Triton), and the headers that carry its trace context.

    Not made current: a streamed call yields to its consumer while it runs, and the consumer's spans
    are not the call's children.
    """
    if _tracer is None:
        return None, None
    span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span, headers


def end_client_span(span: Span | None, error: str | None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_attribute("samo.error", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
