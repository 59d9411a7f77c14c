"""MemoryService over real gRPC: hybrid recall parts, corrections seen through as_of,
near-duplicates across channels, and tenant-wide SearchMemories."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from memcrm.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, memory_pb2, memory_pb2_grpc
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, KEY_READER, auth, ts

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


def said(
    customer: str, iid: str, text: str, days_ago: float, channel: int = common_pb2.CHANNEL_EMAIL
) -> common_pb2.Interaction:
    return common_pb2.Interaction(
        interaction_id=iid,
        customer_id=customer,
        channel=channel,  # type: ignore[arg-type]
        direction=common_pb2.DIRECTION_INBOUND,
        occurred_at=ts(NOW - timedelta(days=days_ago)),
        text=text,
    )


@pytest.fixture(scope="module")
def ingest(channel: grpc.Channel) -> ingestion_pb2_grpc.IngestionServiceStub:
    return ingestion_pb2_grpc.IngestionServiceStub(channel)


@pytest.fixture(scope="module")
def memory(channel: grpc.Channel) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(channel)


def test_recall_parts_versions_and_near_duplicates(
    ingest: ingestion_pb2_grpc.IngestionServiceStub, memory: memory_pb2_grpc.MemoryServiceStub
) -> None:
    c = f"mem-{uuid.uuid4().hex[:8]}"
    first = ingest.IngestBatch(
        ingestion_pb2.IngestBatchRequest(
            interactions=[
                said(c, f"{c}-1", "My refund for order QX-5531 has not arrived yet.", 9),
                said(c, f"{c}-2", "Loved the new lounge in Denver, thank you!", 8),
            ]
        ),
        metadata=auth(KEY_DEMO),
    )
    assert [r.error for r in first.results] == ["", ""]
    before_fix = datetime.now(UTC)
    time.sleep(0.01)
    ingest.Ingest(
        ingestion_pb2.IngestRequest(
            interaction=said(c, f"{c}-1", "My refund for order QX-5531 arrived, thanks.", 9)
        ),
        metadata=auth(KEY_DEMO),
    )
    dup = ingest.Ingest(
        ingestion_pb2.IngestRequest(
            interaction=said(
                c,
                f"{c}-3",
                "My refund for order QX-5531 arrived, thanks!",
                7,
                channel=common_pb2.CHANNEL_TICKET,
            )
        ),
        metadata=auth(KEY_DEMO),
    )

    now = memory.Recall(
        memory_pb2.RecallRequest(customer_id=c, query="refund QX-5531", top_k=5),
        metadata=auth(KEY_READER),
    )
    top = now.memories[0]
    assert top.memory.interaction.text.startswith("My refund for order QX-5531 arrived")
    assert top.parts.lexical > 0 and top.parts.semantic > 0
    total = sum(
        getattr(top.parts, f) for f in ("semantic", "lexical", "recency", "importance", "context")
    )
    assert top.score == pytest.approx(total, abs=1e-4)
    # The corrected refund (version 2) and its near-duplicate ticket come back once.
    refunds = [m for m in now.memories if "QX-5531" in m.memory.interaction.text]
    assert len(refunds) == 1
    timeline = memory.GetTimeline(
        memory_pb2.GetTimelineRequest(customer_id=c), metadata=auth(KEY_READER)
    )
    by_id = {m.interaction.interaction_id: m for m in timeline.memories}
    assert by_id[f"{c}-1"].version == 2
    assert by_id[f"{c}-3"].memory_id == dup.memory_id
    assert by_id[f"{c}-3"].near_duplicate_of == by_id[f"{c}-1"].memory_id

    past = memory.Recall(
        memory_pb2.RecallRequest(customer_id=c, query="refund QX-5531", as_of=ts(before_fix)),
        metadata=auth(KEY_READER),
    )
    texts = [m.memory.interaction.text for m in past.memories]
    assert "My refund for order QX-5531 has not arrived yet." in texts
    assert all("arrived, thanks" not in t for t in texts)


def test_search_memories_across_customers(
    ingest: ingestion_pb2_grpc.IngestionServiceStub, memory: memory_pb2_grpc.MemoryServiceStub
) -> None:
    run = uuid.uuid4().hex[:8]
    items = [
        said(f"s1-{run}", f"s1-{run}-a", "Thinking of moving to Zephyr Air, they are cheaper.", 2),
        said(f"s1-{run}", f"s1-{run}-b", "Zephyr Air offered me a better fare, might switch.", 1),
        said(f"s2-{run}", f"s2-{run}-a", "I will probably switch to Zephyr Air next month.", 3),
        said(f"s3-{run}", f"s3-{run}-a", "Switched to Zephyr Air long ago and came back.", 40),
        said(f"s4-{run}", f"s4-{run}-a", "Please update my billing address.", 1),
    ]
    ingest.IngestBatch(
        ingestion_pb2.IngestBatchRequest(interactions=items), metadata=auth(KEY_DEMO)
    )
    ingest.IngestBatch(
        ingestion_pb2.IngestBatchRequest(
            interactions=[said(f"x-{run}", f"x-{run}-a", "switching to Zephyr Air", 1)]
        ),
        metadata=auth(KEY_OTHER),
    )
    found = memory.SearchMemories(
        memory_pb2.SearchMemoriesRequest(
            query="customers switching to Zephyr Air",
            occurred_after=ts(NOW - timedelta(days=7)),
            one_per_customer=True,
            top_k=10,
        ),
        metadata=auth(KEY_READER),
    )
    customers = [m.memory.interaction.customer_id for m in found.memories]
    assert len(found.trace_id) == 32
    assert {f"s1-{run}", f"s2-{run}"} <= set(customers[:3])
    assert f"s3-{run}" not in customers and f"x-{run}" not in customers
    assert len(customers) == len(set(customers))

    with pytest.raises(grpc.RpcError) as err:
        memory.SearchMemories(memory_pb2.SearchMemoriesRequest(query=""), metadata=auth(KEY_DEMO))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        memory.SearchMemories(
            memory_pb2.SearchMemoriesRequest(query="x"), metadata=auth("not-a-key")
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
