from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from memcrm.core import tracing
from memcrm.core.errors import InvalidArgument
from memcrm.core.types import TraceRef

EXPORTER = InMemorySpanExporter()


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER


PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


def test_server_span_continues_the_callers_traceparent(spans: InMemorySpanExporter) -> None:
    with tracing.server_span("memcrm.v1.X/Y", [("traceparent", TRACEPARENT)]) as span:
        ref = tracing.trace_ref(span)
        carrier = tracing.current_carrier()
    assert ref.trace_id == PARENT_TRACE
    assert carrier["traceparent"].split("-")[1] == PARENT_TRACE
    (finished,) = spans.get_finished_spans()
    assert finished.kind is SpanKind.SERVER
    assert finished.parent is not None and finished.parent.span_id == 0x00F067AA0BA902B7


def test_child_span_in_another_process_joins_through_the_carrier(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.server_span("memcrm.v1.X/Y", []) as server:
        carrier = tracing.current_carrier()
    ref = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with tracing.child_span("memcrm.decide", carrier, links=[ref, TraceRef("zz", "yy")]):
        pass
    child = spans.get_finished_spans()[-1]
    assert child.context.trace_id == server.get_span_context().trace_id
    assert [
        (f"{ln.context.trace_id:032x}", f"{ln.context.span_id:016x}") for ln in child.links
    ] == [(ref.trace_id, ref.span_id)]


def test_errors_are_recorded_and_reraised(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(InvalidArgument),
        tracing.server_span("memcrm.v1.X/Y", []),
    ):
        raise InvalidArgument("customer_id", "is required")
    (finished,) = spans.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.attributes["rpc.grpc.status_code_name"] == "INVALID_ARGUMENT"


def test_garbage_trace_headers_never_break_a_request(spans: InMemorySpanExporter) -> None:
    with tracing.server_span("memcrm.v1.X/Y", [("traceparent", "garbage"), ("tracestate", "=")]):
        pass
    (finished,) = spans.get_finished_spans()
    assert finished.parent is None


def test_links_are_added_for_valid_references_only(spans: InMemorySpanExporter) -> None:
    good = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with tracing.server_span("memcrm.v1.X/Y", []) as span:
        tracing.add_links(span, [good, TraceRef("", ""), TraceRef("0" * 32, "0" * 16)])
    (finished,) = spans.get_finished_spans()
    assert len(finished.links) == 1
