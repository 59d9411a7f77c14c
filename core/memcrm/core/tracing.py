"""OpenTelemetry tracing behind a small interface.

Telemetry must never break a request: every call into the SDK from here is guarded, and a
failure degrades to an invalid (all-zero) span rather than an error. Span and attribute names
are namespaced ``memcrm.*``. Spans are exported over OTLP/gRPC when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from memcrm.core.types import TraceRef

log = logging.getLogger(__name__)

TRACER_NAME = "memcrm"
_propagator = TraceContextTextMapPropagator()
_setup_lock = threading.Lock()
_configured = False


def configure_tracing(component: str) -> None:
    """Install the SDK tracer provider once per process (each Ray replica calls this)."""
    global _configured
    with _setup_lock:
        if _configured:
            return
        _configured = True
        try:
            resource = Resource.create(
                {
                    "service.name": os.environ.get("OTEL_SERVICE_NAME", "memcrm"),
                    "service.namespace": "memcrm",
                    "memcrm.component": component,
                }
            )
            provider = TracerProvider(resource=resource)
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            ):
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
        except Exception:  # tracing never breaks start-up either
            log.exception("memcrm.tracing: could not configure tracing; continuing without")


def trace_ref(span: Span) -> TraceRef:
    ctx = span.get_span_context()
    return TraceRef(trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id))


def link_to(ref: TraceRef) -> Link | None:
    """A span link to a stored span; None when the reference is not a valid W3C id."""
    try:
        ctx = SpanContext(
            trace_id=int(ref.trace_id, 16),
            span_id=int(ref.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:
        return None
    return Link(ctx) if ctx.is_valid else None


def _metadata_carrier(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in metadata:
        name = key.lower()
        if name in ("traceparent", "tracestate"):
            carrier[name] = value.decode() if isinstance(value, bytes) else value
    return carrier


@contextmanager
def server_span(
    name: str,
    metadata: Iterable[tuple[str, str | bytes]],
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span]:
    """A SERVER span continuing the caller's W3C ``traceparent``; errors are recorded."""
    try:
        parent = _propagator.extract(_metadata_carrier(metadata))
        span = trace.get_tracer(TRACER_NAME).start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes or {})
        )
    except Exception:
        log.exception("memcrm.tracing: could not start span %s", name)
        span = trace.INVALID_SPAN
    with _active(span):
        yield span


@contextmanager
def child_span(
    name: str,
    carrier: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    links: Iterable[TraceRef] = (),
) -> Iterator[Span]:
    """An INTERNAL span under the current context, or under ``carrier`` from another process."""
    try:
        parent = _propagator.extract(dict(carrier)) if carrier is not None else None
        span_links = [link for link in (link_to(r) for r in links) if link is not None]
        span = trace.get_tracer(TRACER_NAME).start_span(
            name, context=parent, attributes=dict(attributes or {}), links=span_links
        )
    except Exception:
        log.exception("memcrm.tracing: could not start span %s", name)
        span = trace.INVALID_SPAN
    with _active(span):
        yield span


@contextmanager
def _active(span: Span) -> Iterator[None]:
    """Make ``span`` current; record an escaping error on it; end it."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        _end(span)


def current_carrier() -> dict[str, str]:
    """W3C headers of the current span, to continue the trace in another process."""
    carrier: dict[str, str] = {}
    try:
        _propagator.inject(carrier)
    except Exception:
        log.exception("memcrm.tracing: could not inject context")
    return carrier


def add_links(span: Span, refs: Iterable[TraceRef]) -> None:
    for ref in refs:
        link = link_to(ref)
        if link is None:
            continue
        try:
            span.add_link(link.context, {"memcrm.link": "cited_memory"})
        except Exception:
            log.exception("memcrm.tracing: could not add a link")


def set_attributes(span: Span, attributes: Mapping[str, str | int | float | bool]) -> None:
    try:
        span.set_attributes(dict(attributes))
    except Exception:
        log.exception("memcrm.tracing: could not set attributes")


def _record_error(span: Span, exc: BaseException) -> None:
    try:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        status = getattr(exc, "status", None)
        if isinstance(status, str):
            span.set_attribute("rpc.grpc.status_code_name", status)
    except Exception:
        log.exception("memcrm.tracing: could not record an error")


def _end(span: Span) -> None:
    try:
        span.end()
    except Exception:
        log.exception("memcrm.tracing: could not end a span")
