"""Hybrid recall, as_of visibility, near-duplicates and tenant-wide search, on real stores."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel, Direction, Interaction, TraceRef
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.recall import MemoryReader
from memcrm.memory.store import MemoryStore
from memcrm.models.encoder import Encoder

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ingestor(stores: EmbeddedStores, store: MemoryStore, interpreter: Interpreter) -> Ingestor:
    return Ingestor(store, HotState(stores.redis_url), interpreter)


@pytest.fixture(scope="module")
def reader(store: MemoryStore, encoder: Encoder) -> MemoryReader:
    return MemoryReader(store, encoder)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def said(
    interaction_id: str, text: str, at: datetime, customer: str = "alice", **kw: object
) -> Interaction:
    base = Interaction(
        interaction_id=interaction_id,
        customer_id=customer,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=at,
        text=text,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def ids(recalled: list[object]) -> list[str]:
    return [r.memory.interaction.interaction_id for r in recalled]  # type: ignore[attr-defined]


def test_as_of_sees_exactly_what_was_recorded_before_and_after_a_correction(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    before_anything = datetime.now(UTC)
    ingestor.ingest(tenant, [said("a", "My bag is lost in Denver", T0)], TRACE)
    ingestor.ingest(
        tenant, [said("b", "Please call me back tomorrow", T0 + timedelta(hours=1))], TRACE
    )
    before_fix = datetime.now(UTC)
    fixed = ingestor.ingest(tenant, [said("a", "My bag was found in Denver", T0)], TRACE)[0]
    again = ingestor.ingest(tenant, [said("a", "My bag was found in Denver", T0)], TRACE)[0]
    assert again.duplicate and again.memory_id == fixed.memory_id

    def texts(as_of: datetime | None) -> list[str]:
        found = reader.recall(tenant, "alice", "bag in Denver", top_k=10, as_of=as_of)
        return sorted(r.memory.interaction.text for r in found)

    assert texts(before_anything) == []
    assert texts(before_fix) == ["My bag is lost in Denver", "Please call me back tomorrow"]
    assert texts(None) == ["My bag was found in Denver", "Please call me back tomorrow"]
    timeline = reader.timeline(tenant, "alice", as_of=before_fix).memories
    assert [(m.interaction.interaction_id, m.version) for m in timeline] == [("a", 1), ("b", 1)]
    now = reader.timeline(tenant, "alice").memories
    assert [(m.interaction.interaction_id, m.version) for m in now] == [("a", 2), ("b", 1)]


def test_score_is_the_sum_of_its_parts_and_lexical_match_counts(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    texts = [
        "Where is my refund? Order ZX4411 was cancelled two weeks ago.",
        "I would like to upgrade my seat for the next trip.",
        "The lounge in Frankfurt was very crowded.",
        "Can you send the invoice for my last booking?",
    ]
    items = [said(f"m{i}", t, T0 + timedelta(days=i)) for i, t in enumerate(texts)]
    ingestor.ingest(tenant, items, TRACE)
    found = reader.recall(tenant, "alice", "status of ZX4411", top_k=4)
    assert ids(found)[0] == "m0"
    top = found[0]
    assert top.parts.lexical > 0
    assert all(r.parts.lexical == 0 for r in found[1:])  # no other memory has the term
    for r in found:
        p = r.parts
        total = p.semantic + p.lexical + p.recency + p.importance + p.context
        assert r.score == pytest.approx(total, abs=1e-6)
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)


def test_empty_query_ranks_by_recency_and_importance(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    old = said("old", "I am furious, my luggage is lost and nobody helps", T0)
    new = said(
        "new", "I am furious, my luggage is lost and nobody helps me", T0 + timedelta(days=60)
    )
    ingestor.ingest(tenant, [old, said("x", "ok thanks", T0 + timedelta(days=59))], TRACE)
    ingestor.ingest(tenant, [replace(new, channel=Channel.CHAT, interaction_id="new2")], TRACE)
    found = reader.recall(tenant, "alice", "", top_k=3)
    assert found[0].parts.semantic == 0 and found[0].parts.lexical == 0
    assert found[0].score == pytest.approx(found[0].parts.recency + found[0].parts.importance)
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)


def test_near_duplicates_across_channels_are_linked_and_recalled_once(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    email = said("e1", "My suitcase never arrived in Boston and nobody answers the phone.", T0)
    ticket = said(
        "t1",
        "My suitcase never arrived in Boston and nobody answers the phone!!",
        T0 + timedelta(hours=2),
        channel=Channel.TICKET,
    )
    other = said("o1", "Can I bring my guitar on board as hand luggage?", T0 + timedelta(hours=3))
    first = ingestor.ingest(tenant, [email], TRACE)[0]
    ingestor.ingest(tenant, [ticket, other], TRACE)
    timeline = {m.interaction.interaction_id: m for m in reader.timeline(tenant, "alice").memories}
    assert timeline["t1"].near_duplicate_of == first.memory_id
    assert timeline["o1"].near_duplicate_of == ""
    assert timeline["e1"].near_duplicate_of == ""

    found = reader.recall(tenant, "alice", "suitcase did not arrive in Boston", top_k=3)
    assert len(found) == 2
    assert sorted(ids(found)) in (["e1", "o1"], ["o1", "t1"])


def test_one_batch_is_stored_as_if_one_item_at_a_time(
    ingestor: Ingestor, reader: MemoryReader, store: MemoryStore, tenant: str
) -> None:
    suitcase = "My suitcase never arrived in Boston and nobody answers the phone."
    email = said("e1", suitcase, T0)
    ticket = said("t1", suitcase + "!!", T0 + timedelta(hours=1), channel=Channel.TICKET)
    chat = said("c1", suitcase + " Help!", T0 + timedelta(hours=2), channel=Channel.CHAT)
    fixed = said("e1", "Can I bring my guitar on board as hand luggage?", T0)
    again = said("e1", "Can I bring my guitar on board as hand luggage?", T0)
    out = ingestor.ingest(tenant, [email, ticket, chat, fixed, again], TRACE)

    assert [(o.interaction_id, o.duplicate) for o in out] == [
        ("e1", False),
        ("t1", False),
        ("c1", False),
        ("e1", False),
        ("e1", True),
    ]
    assert out[4].memory_id == out[3].memory_id
    now = datetime.now(UTC)
    versions = {m.memory_id: m for m in store.customer_memories(tenant, "alice", as_of=now)}
    # Paraphrases stored in one call join the first one's cluster, as they would one by one.
    assert versions[out[1].memory_id].near_duplicate_of == out[0].memory_id
    assert versions[out[2].memory_id].near_duplicate_of == out[0].memory_id
    # e1 was corrected in the same call: version 2 replaced version 1.
    timeline = {m.interaction.interaction_id: m for m in reader.timeline(tenant, "alice").memories}
    assert timeline["e1"].version == 2
    assert timeline["e1"].memory_id == out[3].memory_id


def test_a_match_replaced_earlier_in_the_batch_is_not_a_near_duplicate(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    suitcase = "My suitcase never arrived in Boston and nobody answers the phone."
    ingestor.ingest(tenant, [said("e1", suitcase, T0)], TRACE)
    fixed = said("e1", "Can I bring my guitar on board as hand luggage?", T0)
    ticket = said("t1", suitcase + "!!", T0 + timedelta(hours=1), channel=Channel.TICKET)
    ingestor.ingest(tenant, [fixed, ticket], TRACE)
    timeline = {m.interaction.interaction_id: m for m in reader.timeline(tenant, "alice").memories}
    assert timeline["e1"].version == 2
    assert timeline["t1"].near_duplicate_of == ""


def test_a_reply_is_lifted_by_the_turn_it_answers(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    turns = [
        ("q", "Which hotel did you book for the conference in Lisbon?", Direction.OUTBOUND),
        ("a", "The one near the river, it has a pool.", Direction.INBOUND),
        ("z", "My kids loved the aquarium last summer.", Direction.INBOUND),
    ]
    items = [
        said(i, text, T0 + timedelta(minutes=k), direction=d, thread_id="chat-7")
        for k, (i, text, d) in enumerate(turns)
    ]
    ingestor.ingest(tenant, items, TRACE)
    found = {
        r.memory.interaction.interaction_id: r
        for r in reader.recall(tenant, "alice", "hotel for the Lisbon conference", top_k=3)
    }
    assert found["a"].parts.context > found["z"].parts.context
    assert found["a"].parts.context == pytest.approx(
        reader_weight_context() * (found["q"].parts.semantic + found["q"].parts.lexical)
    )


def reader_weight_context() -> float:
    from memcrm.memory.ranking import RecallWeights

    return RecallWeights().context


def test_search_memories_across_customers_with_bounds(
    ingestor: Ingestor, reader: MemoryReader, tenant: str
) -> None:
    week = T0 + timedelta(days=30)
    items = [
        said("s1", "We are thinking of switching to Lufthansa next month.", week, customer="c1"),
        said("s2", "Honestly Lufthansa offered us a better deal, we may switch.", week, "c2"),
        said("s3", "We switched to Lufthansa years ago and came back.", T0, customer="c3"),
        said("s4", "Please update my billing address.", week, customer="c4"),
        said("s5", "Lufthansa is cheaper, considering moving there.", week, customer="c1"),
    ]
    ingestor.ingest(tenant, items, TRACE)
    ingestor.ingest(f"{tenant}-other", [said("x", "switching to Lufthansa", week, "c9")], TRACE)

    found = reader.search(
        tenant,
        "switching to a competitor like Lufthansa",
        top_k=10,
        occurred_after=week - timedelta(days=7),
    )
    customers = [r.memory.interaction.customer_id for r in found]
    assert "c3" not in customers and "c9" not in customers
    assert set(customers[:3]) == {"c1", "c2"}
    one = reader.search(
        tenant,
        "switching to Lufthansa",
        top_k=10,
        occurred_after=week - timedelta(days=7),
        one_per_customer=True,
    )
    one_customers = [r.memory.interaction.customer_id for r in one]
    assert len(one_customers) == len(set(one_customers))
    assert {"c1", "c2"} <= set(one_customers)

    assert reader.search(tenant, "switching to Lufthansa", as_of=T0 - timedelta(days=1)) == []
    with pytest.raises(InvalidArgument) as err:
        reader.search(tenant, "  ")
    assert err.value.field == "query"
    with pytest.raises(InvalidArgument) as err:
        reader.search(tenant, "x", occurred_after=week, occurred_before=T0)
    assert err.value.field == "occurred_before"
