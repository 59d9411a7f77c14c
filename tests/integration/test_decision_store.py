"""Decision records and outcomes against a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from memcrm.core.errors import InvalidArgument, NotFound
from memcrm.core.types import (
    Arithmetic,
    Channel,
    ConsideredAction,
    DecisionRecord,
    DecisionRequest,
    Explanation,
    FeatureAttribution,
    MemoryAttribution,
    Outcome,
    RecommendedAction,
    TraceRef,
)
from memcrm.memory.decisions import DecisionStore, explanation_to_json, record_to_json
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.migrate import migrate
from memcrm.memory.store import MemoryStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def decisions(stores: EmbeddedStores) -> Iterator[DecisionStore]:
    migrate(stores.database_url)
    store = MemoryStore(stores.database_url)
    yield DecisionStore(store)
    store.close()


def record(customer: str, at: datetime) -> DecisionRecord:
    cited = MemoryAttribution(
        str(uuid.uuid4()), "i-1", 0.42, TraceRef("a" * 32, "b" * 16), "my bag is lost", T0
    )
    explanation = Explanation(
        "shap.ExactExplainer(seed=0)",
        -1.0,
        -0.2,
        "log-odds that bag_trace succeeds",
        [FeatureAttribution("context", "any news?", 0.38)],
        [cited],
        "Recommended mainly because of the lost bag.",
    )
    return DecisionRecord(
        recommendation_id=str(uuid.uuid4()),
        request=DecisionRequest(customer, "any news?", Channel.EMAIL, 1, None),
        decided_at=at,
        as_of=at,
        actions=(RecommendedAction("bag_trace", "Trace the bag", 1, 0.9, 0.45, 2.0, explanation),),
        considered=(
            ConsideredAction("bag_trace", "Trace the bag", -0.2, 0.45, 2.0, 0.9, 1, ""),
            ConsideredAction("upgrade", "Offer an upgrade", -2.0, 0.12, 3.0, 0.36, 0, "top 1"),
            ConsideredAction(
                "thanks",
                "Say thanks",
                -1.0,
                0.27,
                1.5,
                0.0,
                0,
                "filtered by suitability suitability[0]: count(profile.open_issues) == 0",
                lever=0.8,
                filtered_by="suitability",
                policy="suitability[0]",
                reads_json='{"profile.open_issues": ["Lost Luggage"]}',
            ),
        ),
        model_version="nba-test",
        model_sha256="c" * 64,
        trace_id="d" * 32,
        catalog_version="airline-1",
    )


def test_a_record_reads_back_exactly_with_its_outcomes(decisions: DecisionStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    saved = record("alice", T0)
    decisions.save(tenant, saved)
    assert decisions.get(tenant, saved.recommendation_id) == saved
    assert saved.cited_memory_ids == (saved.actions[0].explanation.memories[0].memory_id,)

    got = decisions.record_outcome(
        tenant, saved.recommendation_id, "upgrade", Outcome.REJECTED, T0 + timedelta(hours=1)
    )
    assert got.outcome is Outcome.REJECTED
    assert decisions.get(tenant, saved.recommendation_id).outcomes == (got,)

    with pytest.raises(NotFound):
        decisions.get(f"{tenant}-other", saved.recommendation_id)
    for action, outcome, at, field in [
        ("teleport", Outcome.ACCEPTED, T0, "action_id"),
        ("bag_trace", Outcome.UNSPECIFIED, T0, "outcome"),
        ("bag_trace", Outcome.ACCEPTED, T0 - timedelta(seconds=1), "occurred_at"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            decisions.record_outcome(tenant, saved.recommendation_id, action, outcome, at)
        assert err.value.field == field
    with pytest.raises(InvalidArgument) as err:
        decisions.get(tenant, "not-a-uuid")
    assert err.value.field == "recommendation_id"


def test_records_page_newest_first_within_bounds(decisions: DecisionStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    made = [record("bob", T0 + timedelta(minutes=i)) for i in range(5)]
    for r in made:
        decisions.save(tenant, r)
    decisions.save(tenant, record("carol", T0))
    newest_first = [r.recommendation_id for r in reversed(made)]

    seen: list[str] = []
    token = ""
    while True:
        page = decisions.for_customer(
            tenant, "bob", since=None, until=None, page_size=2, page_token=token
        )
        seen += [r.recommendation_id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert seen == newest_first

    bounded = decisions.for_customer(
        tenant,
        "bob",
        since=T0 + timedelta(minutes=1),
        until=T0 + timedelta(minutes=3),
        page_size=10,
        page_token="",
    )
    assert [r.recommendation_id for r in bounded.records] == newest_first[2:4]
    first = decisions.for_customer(
        tenant, "bob", since=None, until=None, page_size=2, page_token=""
    )
    with pytest.raises(InvalidArgument) as err:
        decisions.for_customer(
            tenant, "carol", since=None, until=None, page_size=2, page_token=first.next_page_token
        )
    assert err.value.field == "page_token"


def two_actions(customer: str) -> DecisionRecord:
    """A record whose two returned actions cite the same two memories, in different orders."""
    base = record(customer, T0)
    first = base.actions[0]
    other = MemoryAttribution(
        str(uuid.uuid4()), "i-2", -0.05, TraceRef("e" * 32, "f" * 16), "thanks!", T0
    )
    mine = first.explanation.memories[0]
    upgrade = replace(
        first,
        action_id="upgrade",
        rank=2,
        explanation=replace(
            first.explanation,
            memories=[replace(other, shap_value=0.3), replace(mine, shap_value=-0.1)],
        ),
    )
    bag = replace(first, explanation=replace(first.explanation, memories=[mine, other]))
    return replace(base, actions=(bag, upgrade))


def test_a_record_cites_each_memory_once(decisions: DecisionStore, stores: EmbeddedStores) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    saved = two_actions("dave")
    decisions.save(tenant, saved)
    assert decisions.get(tenant, saved.recommendation_id) == saved

    stored = json_record(stores, tenant, saved.recommendation_id)
    assert stored["schema"] == 2
    assert sorted(c["memory_id"] for c in stored["cited"]) == sorted(saved.cited_memory_ids)
    for action, kept in zip(saved.actions, stored["actions"], strict=True):
        assert kept["explanation"]["memories"] == [
            [m.memory_id, m.shap_value] for m in action.explanation.memories
        ]


def test_a_record_keeps_its_arithmetic(decisions: DecisionStore, stores: EmbeddedStores) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    saved = replace(two_actions("fay"), arithmetic=Arithmetic("float32", "bfloat16"))
    decisions.save(tenant, saved)
    assert decisions.get(tenant, saved.recommendation_id).arithmetic == saved.arithmetic
    stored = json_record(stores, tenant, saved.recommendation_id)
    assert stored["arithmetic"] == {"scoring": "float32", "context_encoder": "bfloat16"}


def test_a_schema_1_record_still_reads(decisions: DecisionStore, stores: EmbeddedStores) -> None:
    # Records written before schema 2 repeated every citation in every action's explanation.
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    saved = two_actions("erin")
    old = record_to_json(saved)
    old["schema"] = 1
    del old["cited"], old["arithmetic"]  # neither existed then
    for action, original in zip(old["actions"], saved.actions, strict=True):
        action["explanation"] = explanation_to_json(original.explanation)
    with psycopg.connect(stores.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO decisions (tenant_id, recommendation_id, customer_id, decided_at,"
            " as_of, model_version, model_sha256, trace_id, cited_memory_ids, record)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                tenant,
                uuid.UUID(saved.recommendation_id),
                "erin",
                saved.decided_at,
                saved.as_of,
                saved.model_version,
                saved.model_sha256,
                saved.trace_id,
                [uuid.UUID(m) for m in saved.cited_memory_ids],
                Jsonb(old),
            ),
        )
    assert decisions.get(tenant, saved.recommendation_id) == saved


def json_record(stores: EmbeddedStores, tenant: str, recommendation_id: str) -> dict[str, Any]:
    with psycopg.connect(stores.database_url) as conn:
        row = conn.execute(
            "SELECT record FROM decisions WHERE tenant_id = %s AND recommendation_id = %s",
            (tenant, uuid.UUID(recommendation_id)),
        ).fetchone()
    assert row is not None
    stored: dict[str, Any] = row[0]
    return stored
