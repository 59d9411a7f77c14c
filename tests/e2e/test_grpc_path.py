"""The whole path over real gRPC through Ray Serve's proxy: ingest, recall, timeline, next best
action with its SHAP explanation and trace links, idempotency, errors, auth and tenancy."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psutil
import pytest

from memcrm.services.run import ServeRuntime
from memcrm.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, KEY_READER, auth, ts
from tests.e2e.otlp import OtlpCollector, ReceivedSpan

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
HISTORY = [
    "@united my bag never made it to Houston, three days and no update. Where is my luggage?",
    "@united still no sign of my suitcase. Your baggage desk keeps hanging up on me.",
    "@united flight was fine otherwise, crew were friendly",
    "@united how do I add a checked bag to my booking next month?",
    "@united lost luggage claim 4471 - nobody has called me back. This is unacceptable.",
]


def interaction(customer: str, i: int, text: str) -> common_pb2.Interaction:
    return common_pb2.Interaction(
        interaction_id=f"{customer}-tw-{i}",
        customer_id=customer,
        channel=common_pb2.CHANNEL_SOCIAL,
        direction=common_pb2.DIRECTION_INBOUND,
        occurred_at=ts(T0 + timedelta(days=i)),
        text=text,
        attributes={"airline": "United"},
    )


@pytest.fixture(scope="module")
def stubs(
    channel: grpc.Channel,
) -> tuple[
    ingestion_pb2_grpc.IngestionServiceStub,
    memory_pb2_grpc.MemoryServiceStub,
    recommendation_pb2_grpc.RecommendationServiceStub,
]:
    return (
        ingestion_pb2_grpc.IngestionServiceStub(channel),
        memory_pb2_grpc.MemoryServiceStub(channel),
        recommendation_pb2_grpc.RecommendationServiceStub(channel),
    )


@pytest.fixture(scope="module")
def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ingested(
    stubs: tuple[object, ...], customer: str
) -> tuple[ingestion_pb2.IngestBatchResponse, str]:
    ingest = stubs[0]
    parent_trace = uuid.uuid4().hex
    traceparent = f"00-{parent_trace}-{uuid.uuid4().hex[:16]}-01"
    request = ingestion_pb2.IngestBatchRequest(
        interactions=[interaction(customer, i, t) for i, t in enumerate(HISTORY)]
    )
    response = ingest.IngestBatch(  # type: ignore[attr-defined]
        request, metadata=auth(KEY_DEMO, traceparent=traceparent), timeout=60
    )
    return response, parent_trace


def test_ingest_batch_stores_every_item_and_continues_the_callers_trace(
    ingested: tuple[ingestion_pb2.IngestBatchResponse, str],
) -> None:
    response, parent_trace = ingested
    assert [r.error for r in response.results] == [""] * len(HISTORY)
    assert all(r.memory_id and not r.duplicate for r in response.results)
    assert response.trace_id == parent_trace
    assert all(r.enrichment.model_version for r in response.results)


def test_reingest_is_idempotent(stubs: tuple[object, ...], customer: str, ingested: object) -> None:
    ingest = stubs[0]
    first = ingested[0].results[0]  # type: ignore[index]
    again = ingest.Ingest(  # type: ignore[attr-defined]
        ingestion_pb2.IngestRequest(interaction=interaction(customer, 0, HISTORY[0])),
        metadata=auth(KEY_DEMO),
    )
    assert again.duplicate
    assert again.memory_id == first.memory_id
    timeline = stubs[1].GetTimeline(  # type: ignore[attr-defined]
        memory_pb2.GetTimelineRequest(customer_id=customer), metadata=auth(KEY_DEMO)
    )
    assert len(timeline.memories) == len(HISTORY)


def test_recall_ranks_by_similarity_and_timeline_pages_oldest_first(
    stubs: tuple[object, ...], customer: str, ingested: object
) -> None:
    memory = stubs[1]
    recalled = memory.Recall(  # type: ignore[attr-defined]
        memory_pb2.RecallRequest(customer_id=customer, query="missing suitcase", top_k=3),
        metadata=auth(KEY_DEMO),
    )
    assert len(recalled.memories) == 3
    assert "bag" in recalled.memories[0].memory.interaction.text.lower() or (
        "suitcase" in recalled.memories[0].memory.interaction.text.lower()
    )
    scores = [m.score for m in recalled.memories]
    assert scores == sorted(scores, reverse=True)
    assert len(recalled.trace_id) == 32

    first = memory.GetTimeline(  # type: ignore[attr-defined]
        memory_pb2.GetTimelineRequest(customer_id=customer, page_size=2), metadata=auth(KEY_DEMO)
    )
    seen = [m.interaction.text for m in first.memories]
    token = first.next_page_token
    while token:
        page = memory.GetTimeline(  # type: ignore[attr-defined]
            memory_pb2.GetTimelineRequest(customer_id=customer, page_size=2, page_token=token),
            metadata=auth(KEY_DEMO),
        )
        seen += [m.interaction.text for m in page.memories]
        token = page.next_page_token
    assert seen == HISTORY


def test_next_best_action_explains_with_ingested_memories_and_links_their_spans(
    stubs: tuple[object, ...],
    customer: str,
    ingested: tuple[ingestion_pb2.IngestBatchResponse, str],
    collector: OtlpCollector,
) -> None:
    response, _ = ingested
    ingest_trace = response.trace_id
    by_memory = {r.memory_id: r.interaction_id for r in response.results}
    nba = stubs[2].NextBestAction(  # type: ignore[attr-defined]
        recommendation_pb2.NextBestActionRequest(
            customer_id=customer, context="any news on my lost bag?", top_n=3
        ),
        metadata=auth(KEY_DEMO),
        timeout=60,
    )
    assert len(nba.actions) == 3
    assert [a.rank for a in nba.actions] == [1, 2, 3]
    assert nba.model_version and nba.recommendation_id and len(nba.trace_id) == 32
    scores = [a.score for a in nba.actions]
    assert scores == sorted(scores, reverse=True)
    for action in nba.actions:
        e = action.explanation
        total = e.base_value + sum(f.shap_value for f in e.features)
        total += sum(m.shap_value for m in e.memories)
        assert abs(total - e.output_value) < 1e-4
        assert e.explainer.startswith("shap.")
        assert e.summary
        assert {m.memory_id for m in e.memories} == set(by_memory)
        for m in e.memories:
            assert m.interaction_id == by_memory[m.memory_id]
            assert m.trace_id == ingest_trace and len(m.span_id) == 16
        magnitudes = [abs(m.shap_value) for m in e.memories]
        assert magnitudes == sorted(magnitudes, reverse=True)

    cited_spans = {(m.trace_id, m.span_id) for a in nba.actions for m in a.explanation.memories}

    def nba_span_exported(spans: list[ReceivedSpan]) -> bool:
        return any(s.trace_id == nba.trace_id and s.name.endswith("/NextBestAction") for s in spans)

    spans = collector.wait_for(nba_span_exported)
    server = next(
        s for s in spans if s.trace_id == nba.trace_id and s.name.endswith("/NextBestAction")
    )
    assert server.name == "memcrm.v1.RecommendationService/NextBestAction"
    assert set(server.links) == cited_spans
    ingest_spans = [s for s in spans if s.trace_id == ingest_trace and "IngestBatch" in s.name]
    assert {(s.trace_id, s.span_id) for s in ingest_spans} == cited_spans

    # The recommendation replica's steps are children of the server span: embedding the
    # context, the recall query, scoring and explaining, writing the record.
    steps = ("memcrm.understand", "memcrm.recall", "memcrm.decide", "memcrm.decision_record")

    def steps_exported(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans if s.trace_id == nba.trace_id}
        return all(step in names for step in steps)

    spans = collector.wait_for(steps_exported)
    children = {s.name: s for s in spans if s.trace_id == nba.trace_id and s.name in steps}
    assert {s.parent_span_id for s in children.values()} == {server.span_id}
    assert cited_spans <= set(children["memcrm.decide"].links)


def test_bad_input_is_invalid_argument_naming_the_field(stubs: tuple[object, ...]) -> None:
    ingest, memory, recommend = stubs
    missing_time = common_pb2.Interaction(
        interaction_id="x-1", customer_id="c-1", channel=common_pb2.CHANNEL_EMAIL, text="hi"
    )
    bad_customer = interaction("c-1", 0, "hello")
    bad_customer.customer_id = "not an id!"
    cases = [
        (
            ingest.Ingest,  # type: ignore[attr-defined]
            ingestion_pb2.IngestRequest(interaction=missing_time),
            "interaction.occurred_at",
        ),
        (
            ingest.Ingest,  # type: ignore[attr-defined]
            ingestion_pb2.IngestRequest(interaction=bad_customer),
            "interaction.customer_id",
        ),
        (
            memory.Recall,  # type: ignore[attr-defined]
            memory_pb2.RecallRequest(customer_id="c-1", top_k=1000),
            "top_k",
        ),
        (
            recommend.NextBestAction,  # type: ignore[attr-defined]
            recommendation_pb2.NextBestActionRequest(customer_id=""),
            "customer_id",
        ),
        (
            ingest.IngestBatch,  # type: ignore[attr-defined]
            ingestion_pb2.IngestBatchRequest(
                interactions=[interaction("c-1", i, "x") for i in range(501)]
            ),
            "interactions",
        ),
    ]
    for call, request, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=auth(KEY_DEMO), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert err.value.details().startswith(field), err.value.details()
        assert "Traceback" not in err.value.details()


def test_one_bad_item_fails_only_itself_and_writes_nothing(stubs: tuple[object, ...]) -> None:
    ingest, memory, _ = stubs
    customer = f"mixed-{uuid.uuid4().hex[:6]}"
    good = interaction(customer, 1, "my flight was cancelled, please help me rebook")
    future = interaction(customer, 2, "from the future")
    future.occurred_at.CopyFrom(ts(datetime.now(UTC) + timedelta(days=5)))
    response = ingest.IngestBatch(  # type: ignore[attr-defined]
        ingestion_pb2.IngestBatchRequest(interactions=[good, future]), metadata=auth(KEY_DEMO)
    )
    assert response.results[0].error == "" and response.results[0].memory_id
    assert response.results[1].error.startswith("interactions[1].occurred_at")
    assert response.results[1].interaction_id == future.interaction_id
    assert response.results[1].memory_id == ""
    timeline = memory.GetTimeline(  # type: ignore[attr-defined]
        memory_pb2.GetTimelineRequest(customer_id=customer), metadata=auth(KEY_DEMO)
    )
    assert [m.interaction.interaction_id for m in timeline.memories] == [good.interaction_id]


def test_credentials_are_required_and_roles_enforced(stubs: tuple[object, ...]) -> None:
    ingest, memory, _ = stubs
    request = memory_pb2.RecallRequest(customer_id="c-1", query="x")
    with pytest.raises(grpc.RpcError) as err:
        memory.Recall(request)  # type: ignore[attr-defined]
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        memory.Recall(request, metadata=auth("not-a-key"))  # type: ignore[attr-defined]
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    memory.Recall(request, metadata=auth(KEY_READER))  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        ingest.Ingest(  # type: ignore[attr-defined]
            ingestion_pb2.IngestRequest(interaction=interaction("c-1", 0, "hi")),
            metadata=auth(KEY_READER),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_another_tenant_sees_nothing_of_the_first(
    stubs: tuple[object, ...], customer: str, ingested: object
) -> None:
    _, memory, recommend = stubs
    recalled = memory.Recall(  # type: ignore[attr-defined]
        memory_pb2.RecallRequest(customer_id=customer, query="lost bag"), metadata=auth(KEY_OTHER)
    )
    assert list(recalled.memories) == []
    timeline = memory.GetTimeline(  # type: ignore[attr-defined]
        memory_pb2.GetTimelineRequest(customer_id=customer), metadata=auth(KEY_OTHER)
    )
    assert list(timeline.memories) == []
    nba = recommend.NextBestAction(  # type: ignore[attr-defined]
        recommendation_pb2.NextBestActionRequest(customer_id=customer, context="lost bag"),
        metadata=auth(KEY_OTHER),
        timeout=60,
    )
    assert all(len(a.explanation.memories) == 0 for a in nba.actions)


def test_grpc_proxy_listens_on_the_configured_host_only(service: ServeRuntime) -> None:
    port = service.settings.grpc_port
    listening = {
        ipaddress.ip_address(c.laddr.ip)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }
    # gRPC may bind a dual-stack socket: ::ffff:127.0.0.1 is 127.0.0.1.
    plain = {getattr(ip, "ipv4_mapped", None) or ip for ip in listening}
    assert plain == {ipaddress.ip_address("127.0.0.1")}


def test_an_ingested_complaint_comes_back_from_recall_understood(
    stubs: tuple[object, ...],
) -> None:
    ingest, memory, _ = stubs
    customer = f"understood-{uuid.uuid4().hex[:6]}"
    complaint = interaction(
        customer,
        1,
        "You cancelled my flight and charged me $200 to rebook. Ticket 88231 is still open "
        "and nobody answers. This is the worst service I have ever had.",
    )
    ingested = ingest.Ingest(  # type: ignore[attr-defined]
        ingestion_pb2.IngestRequest(interaction=complaint), metadata=auth(KEY_DEMO)
    )
    assert ingested.enrichment.sentiment.name == "negative"
    recalled = memory.Recall(  # type: ignore[attr-defined]
        memory_pb2.RecallRequest(customer_id=customer, query="cancelled flight refund"),
        metadata=auth(KEY_DEMO),
    )
    e = recalled.memories[0].memory.enrichment
    assert e.sentiment.name == "negative" and e.sentiment_score < 0
    assert e.intents and all(0.0 <= i.confidence <= 1.0 for i in e.intents)
    assert {x.type for x in e.entities} >= {"money", "ticket_number"}
    text = recalled.memories[0].memory.interaction.text
    assert all(text[x.start : x.end] == x.text for x in e.entities)
    assert 0.0 < e.importance <= 1.0
    assert e.model_version
