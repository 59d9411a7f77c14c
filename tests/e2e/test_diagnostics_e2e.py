"""DiagnosticsService.Echo over real gRPC through Ray Serve's proxy: the same path as every RPC
(API key, server span, error mapping) and nothing else."""

from __future__ import annotations

import uuid

import grpc
import pytest

from memcrm.v1 import diagnostics_pb2, diagnostics_pb2_grpc
from tests.e2e.conftest import KEY_DEMO, KEY_READER, auth
from tests.e2e.otlp import OtlpCollector, ReceivedSpan

pytestmark = pytest.mark.e2e

ECHO = "memcrm.v1.DiagnosticsService/Echo"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]


@pytest.fixture(scope="module")
def diagnostics(channel: grpc.Channel) -> diagnostics_pb2_grpc.DiagnosticsServiceStub:
    return diagnostics_pb2_grpc.DiagnosticsServiceStub(channel)


def traceparent() -> tuple[str, str]:
    """A W3C traceparent with a fresh trace id, and that trace id."""
    trace_id = uuid.uuid4().hex
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01", trace_id


def server_span(collector: OtlpCollector, trace_id: str) -> ReceivedSpan:
    def exported(spans: list[ReceivedSpan]) -> bool:
        return any(s.trace_id == trace_id and s.name == ECHO for s in spans)

    spans = collector.wait_for(exported)
    return next(s for s in spans if s.trace_id == trace_id and s.name == ECHO)


def test_echo_returns_the_message_and_a_trace_id(
    diagnostics: diagnostics_pb2_grpc.DiagnosticsServiceStub,
) -> None:
    message = "ping \u00e9\u00e8 \U0001f6eb " + uuid.uuid4().hex
    response = diagnostics.Echo(
        diagnostics_pb2.EchoRequest(message=message), metadata=auth(KEY_DEMO), timeout=30
    )
    assert response.message == message
    assert len(response.trace_id) == 32 and int(response.trace_id, 16) != 0
    again = diagnostics.Echo(
        diagnostics_pb2.EchoRequest(message=""), metadata=auth(KEY_DEMO), timeout=30
    )
    assert again.message == ""
    assert len(again.trace_id) == 32 and again.trace_id != response.trace_id


def test_echo_needs_only_the_reader_role_and_opens_the_server_span(
    diagnostics: diagnostics_pb2_grpc.DiagnosticsServiceStub, collector: OtlpCollector
) -> None:
    parent, trace_id = traceparent()
    response = diagnostics.Echo(
        diagnostics_pb2.EchoRequest(message="reader"),
        metadata=auth(KEY_READER, traceparent=parent),
        timeout=30,
    )
    assert response.message == "reader"
    assert response.trace_id == trace_id
    span = server_span(collector, trace_id)
    assert span.attributes["rpc.method"] == ECHO
    assert span.attributes["memcrm.tenant"] == "demo"
    assert "rpc.grpc.status_code" not in span.attributes


def test_echo_without_a_valid_api_key_is_unauthenticated(
    diagnostics: diagnostics_pb2_grpc.DiagnosticsServiceStub, collector: OtlpCollector
) -> None:
    request = diagnostics_pb2.EchoRequest(message="who am I")
    with pytest.raises(grpc.RpcError) as err:
        diagnostics.Echo(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" in err.value.details()

    parent, trace_id = traceparent()
    with pytest.raises(grpc.RpcError) as err:
        diagnostics.Echo(request, metadata=auth("not-a-key", traceparent=parent), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "unknown API key"
    span = server_span(collector, trace_id)
    assert span.attributes["rpc.grpc.status_code"] == UNAUTHENTICATED
    assert "memcrm.tenant" not in span.attributes


def test_echo_rejects_what_no_text_field_accepts(
    diagnostics: diagnostics_pb2_grpc.DiagnosticsServiceStub,
) -> None:
    for message in ("x" * (32 * 1024 + 1), "nul\x00byte"):
        with pytest.raises(grpc.RpcError) as err:
            diagnostics.Echo(
                diagnostics_pb2.EchoRequest(message=message), metadata=auth(KEY_DEMO), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("message"), err.value.details()
