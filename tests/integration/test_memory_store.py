"""The memory layer against a real PostgreSQL with pgvector and a real Redis."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel, Direction, Interaction, TraceRef
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.migrate import migrate
from memcrm.memory.recall import MemoryReader
from memcrm.memory.store import MemoryStore
from memcrm.models.encoder import Encoder

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
T0 = datetime(2015, 2, 17, 9, 30, tzinfo=UTC)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def interaction(i: int, text: str, customer: str = "alice", **kw: object) -> Interaction:
    base = Interaction(
        interaction_id=f"int-{i}",
        customer_id=customer,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=T0 + timedelta(hours=i),
        text=text,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


TEXTS = [
    "My suitcase never arrived in Boston and nobody answers the phone.",
    "Thanks, the crew on flight 22 were lovely!",
    "I want a refund for the cancelled flight to Denver.",
    "Can I add extra legroom to my booking next week?",
]


def test_migrations_are_idempotent(stores: EmbeddedStores) -> None:
    migrate(stores.database_url)
    assert migrate(stores.database_url) == []


def test_ingest_recall_timeline_roundtrip(
    store: MemoryStore, hot: HotState, encoder: Encoder, interpreter: Interpreter, tenant: str
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    outcomes = ingestor.ingest(tenant, [interaction(i, t) for i, t in enumerate(TEXTS)], TRACE)
    assert [o.error for o in outcomes] == [""] * 4
    assert not any(o.duplicate for o in outcomes)

    reader = MemoryReader(store, encoder)
    recalled = reader.recall(tenant, "alice", "lost baggage", top_k=2)
    assert recalled[0].memory.interaction.interaction_id == "int-0"
    assert recalled[0].score >= recalled[1].score
    assert recalled[0].memory.ingest_trace == TRACE
    assert recalled[0].embedding.shape == (384,)

    page = reader.timeline(tenant, "alice", page_size=3)
    assert [m.interaction.interaction_id for m in page.memories] == ["int-0", "int-1", "int-2"]
    rest = reader.timeline(tenant, "alice", page_size=3, page_token=page.next_page_token)
    assert [m.interaction.interaction_id for m in rest.memories] == ["int-3"]
    assert rest.next_page_token == ""


def test_reingest_is_idempotent_with_and_without_redis(
    store: MemoryStore,
    hot: HotState,
    encoder: Encoder,
    interpreter: Interpreter,
    stores: EmbeddedStores,
    tenant: str,
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    first = ingestor.ingest(tenant, [interaction(1, TEXTS[0])], TRACE)[0]
    again = ingestor.ingest(tenant, [interaction(1, TEXTS[0])], TRACE)[0]
    assert again.duplicate and again.memory_id == first.memory_id

    redis.Redis.from_url(stores.redis_url).flushall()
    cold = ingestor.ingest(tenant, [interaction(1, TEXTS[0])], TRACE)[0]
    assert cold.duplicate and cold.memory_id == first.memory_id
    assert store.count(tenant) == 1


def test_changed_content_is_a_new_version_and_as_of_sees_the_old(
    store: MemoryStore, hot: HotState, encoder: Encoder, interpreter: Interpreter, tenant: str
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    first = ingestor.ingest(tenant, [interaction(1, "My bag is lost")], TRACE)[0]
    between = datetime.now(UTC)
    second = ingestor.ingest(tenant, [interaction(1, "My bag was found, thanks")], TRACE)[0]
    assert not second.duplicate and second.memory_id != first.memory_id

    reader = MemoryReader(store, encoder)
    now_view = reader.timeline(tenant, "alice")
    assert [m.memory_id for m in now_view.memories] == [second.memory_id]
    past_view = reader.timeline(tenant, "alice", as_of=between)
    assert [m.memory_id for m in past_view.memories] == [first.memory_id]


def test_bad_items_fail_alone_and_write_nothing(
    store: MemoryStore, hot: HotState, encoder: Encoder, interpreter: Interpreter, tenant: str
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    future = datetime.now(UTC) + timedelta(days=3)
    items = [
        interaction(1, TEXTS[0]),
        interaction(2, TEXTS[1], customer="bad customer id"),
        interaction(3, TEXTS[2], occurred_at=future),
    ]
    outcomes = ingestor.ingest(tenant, items, TRACE)
    assert outcomes[0].error == "" and outcomes[0].memory_id
    assert outcomes[1].error.startswith("interactions[1].customer_id")
    assert outcomes[2].error.startswith("interactions[2].occurred_at")
    assert store.count(tenant) == 1


def test_tenants_are_isolated(
    store: MemoryStore, hot: HotState, encoder: Encoder, interpreter: Interpreter
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    ingestor.ingest(a, [interaction(1, TEXTS[0])], TRACE)
    reader = MemoryReader(store, encoder)
    assert reader.recall(b, "alice", "suitcase") == []
    assert reader.timeline(b, "alice").memories == []
    # The same interaction_id in another tenant is a different interaction.
    other = ingestor.ingest(b, [interaction(1, TEXTS[0])], TRACE)[0]
    assert not other.duplicate


def test_recall_filters_channels_and_validates(
    store: MemoryStore, hot: HotState, encoder: Encoder, interpreter: Interpreter, tenant: str
) -> None:
    ingestor = Ingestor(store, hot, interpreter)
    ingestor.ingest(
        tenant,
        [interaction(1, TEXTS[0]), interaction(2, TEXTS[2], channel=Channel.TICKET)],
        TRACE,
    )
    reader = MemoryReader(store, encoder)
    only = reader.recall(tenant, "alice", "flight", channels=[int(Channel.TICKET)])
    assert [r.memory.interaction.channel for r in only] == [Channel.TICKET]
    # Without a query: the most important recent memories (both are years old here, so the
    # complaint's importance decides).
    recent = reader.recall(tenant, "alice", "")
    assert [r.memory.interaction.interaction_id for r in recent] == ["int-1", "int-2"]
    assert recent[0].memory.enrichment.importance > recent[1].memory.enrichment.importance
    with pytest.raises(InvalidArgument) as err:
        reader.recall(tenant, "alice", "x", top_k=101)
    assert err.value.field == "top_k"
    with pytest.raises(InvalidArgument) as err:
        reader.timeline(tenant, "alice", page_token="garbage")
    assert err.value.field == "page_token"


def test_redaction_removes_pii_from_postgres_and_from_the_embedding_input(
    store: MemoryStore,
    hot: HotState,
    encoder: Encoder,
    interpreter: Interpreter,
    stores: EmbeddedStores,
    tenant: str,
) -> None:
    card = "4111 1111 1111 1111"
    text = f"Please refund the $120 to my card {card}, my order #A12345 never shipped."
    outcome = Ingestor(store, hot, interpreter).ingest(tenant, [interaction(1, text)], TRACE)[0]
    assert outcome.error == ""
    with psycopg.connect(stores.database_url) as conn:
        row = conn.execute(
            "SELECT text, enrichment::text, embedding::text FROM memories WHERE tenant_id = %s",
            (tenant,),
        ).fetchone()
    assert row is not None
    stored_text, enrichment_json, _ = row
    assert "4111" not in stored_text and "4111" not in enrichment_json
    assert "[PAYMENT_CARD]" in stored_text
    memory = MemoryReader(store, encoder).timeline(tenant, "alice").memories[0]
    redactions = memory.enrichment.redactions
    assert [r.type for r in redactions] == ["payment_card"]
    assert stored_text[redactions[0].start : redactions[0].end] == "[PAYMENT_CARD]"
    assert {e.type for e in memory.enrichment.entities} >= {"money", "order_number"}
    for e in memory.enrichment.entities:
        assert stored_text[e.start : e.end] == e.text
    # The embedding was computed from the redacted text, not the original.
    recalled = MemoryReader(store, encoder).recall(tenant, "alice", "refund", top_k=1)[0]
    redacted_vector = encoder.encode([stored_text])[0]
    original_vector = encoder.encode([text])[0]
    assert float(recalled.embedding @ redacted_vector) > 0.9999
    assert float(recalled.embedding @ original_vector) < 0.9999
