"""A decision records the arithmetic it was computed in, and replays in it: a server scoring in
float32 still reproduces, bit for bit, the decisions it (or an older version) scored in float64,
including records written before the arithmetic was kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from memcrm.core.settings import Settings
from memcrm.core.types import (
    Arithmetic,
    Channel,
    DecisionRecord,
    DecisionRequest,
    Direction,
    Interaction,
    TraceRef,
)
from memcrm.decisions.service import DecisionService
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.store import MemoryStore
from memcrm.models.encoder import Encoder
from memcrm.models.query_encoder import QueryEncoder

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HISTORY = (
    "My suitcase never arrived in Boston and nobody answers the phone.",
    "Still no news about my bag, this is the third time I write.",
    "Thanks for the upgrade last month, the lounge was lovely.",
    "Can I change my flight to Friday without a fee?",
)
CONTEXT = "Where is my bag? It has been four days."


@pytest.fixture(scope="module")
def services(
    store: MemoryStore, hot: HotState, encoder: Encoder
) -> Iterator[dict[str, DecisionService]]:
    query_encoder = QueryEncoder(encoder)
    yield {
        precision: DecisionService(
            Settings(scoring_precision=precision), store, hot, encoder, query_encoder
        )
        for precision in ("float32", "float64")
    }


@pytest.fixture(scope="module")
def tenant(store: MemoryStore, hot: HotState, interpreter: Interpreter) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    Ingestor(store, hot, interpreter).ingest(
        tenant,
        [
            Interaction(
                interaction_id=f"i{k}",
                customer_id="alice",
                channel=Channel.EMAIL,
                direction=Direction.INBOUND,
                occurred_at=T0 + timedelta(hours=k),
                text=text,
            )
            for k, text in enumerate(HISTORY)
        ],
        TRACE,
    )
    return tenant


def decide(service: DecisionService, tenant: str) -> DecisionRecord:
    request = DecisionRequest("alice", CONTEXT, Channel.UNSPECIFIED, 3, None)
    record, answer = service.decide(tenant, request, "1" * 32, {}, lambda r: r.recommendation_id)
    assert answer == record.recommendation_id
    return record


def test_each_decision_records_its_arithmetic(
    services: dict[str, DecisionService], tenant: str
) -> None:
    embedded_in = QueryEncoder.resolve("auto")
    records = {p: decide(s, tenant) for p, s in services.items()}
    for precision, record in records.items():
        assert record.arithmetic == Arithmetic(scoring=precision, context_encoder=embedded_in)
        for action in record.actions:
            e = action.explanation
            # The explanation's output is the very log-odds the action was ranked on.
            (considered,) = [c for c in record.considered if c.action_id == action.action_id]
            assert e.output_value == considered.log_odds
            total = e.base_value + sum(f.shap_value for f in e.features)
            total += sum(m.shap_value for m in e.memories)
            assert abs(total - e.output_value) <= 1e-4
    # The same decision in both precisions: the same actions, numbers equal to float32's ~1e-7.
    single, double = records["float32"], records["float64"]
    assert [a.action_id for a in single.actions] == [a.action_id for a in double.actions]
    for a, b in zip(single.actions, double.actions, strict=True):
        assert a.propensity == pytest.approx(b.propensity, abs=1e-5)
        assert a.propensity != b.propensity  # really computed in another precision


def test_a_server_replays_each_record_in_the_precision_it_names(
    services: dict[str, DecisionService], tenant: str
) -> None:
    # Whatever the server now scores in, a record is replayed in its own precision.
    records = [decide(s, tenant) for s in services.values()]
    for replaying in services.values():
        for record in records:
            replay = replaying.replay(tenant, record.recommendation_id, {})
            assert (replay.identical, replay.diff) == (True, "")


def test_a_record_written_before_the_arithmetic_was_kept_replays_in_float64(
    services: dict[str, DecisionService],
    tenant: str,
    stores: EmbeddedStores,
) -> None:
    # Such records were scored in float64; without the field they read as that.
    record = decide(services["float64"], tenant)
    with psycopg.connect(stores.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT record FROM decisions WHERE tenant_id = %s AND recommendation_id = %s",
            (tenant, uuid.UUID(record.recommendation_id)),
        ).fetchone()
        assert row is not None
        old = dict(row[0])
        del old["arithmetic"]
        conn.execute(
            "UPDATE decisions SET record = %s WHERE tenant_id = %s AND recommendation_id = %s",
            (Jsonb(old), tenant, uuid.UUID(record.recommendation_id)),
        )
    replay = services["float32"].replay(tenant, record.recommendation_id, {})
    assert (replay.identical, replay.diff) == (True, "")
