"""Predictions and proactive signals against a real PostgreSQL and Redis: the recent-memory
read, the ordered score swap, the tenant event stream, and the watcher end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.errors import StoreUnavailable
from memcrm.core.tenants import TenantConfigs, parse_config
from memcrm.core.types import (
    SIGNAL_NAMES,
    Channel,
    Crossing,
    Direction,
    Interaction,
    Prediction,
    SignalEvent,
    TraceRef,
)
from memcrm.decisions.predictions import CustomerPredictions, Predictor, SignalWatcher, Trigger
from memcrm.explain.shapley import ADDITIVITY_TOLERANCE
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.signals import Scores, SignalFeed, SignalState
from memcrm.memory.store import MemoryStore
from memcrm.models.signals import load_signal_scorer

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
NOW = datetime.now(UTC).replace(microsecond=0)

COMPLAINTS = [
    "My suitcase never arrived and nobody answers the phone, this is the third day.",
    "Still no bag. Your baggage desk keeps hanging up on me.",
    "Flight cancelled again and I was stuck at the airport overnight with no help.",
    "Worst customer service ever, I have been on hold for two hours about my lost luggage.",
]


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ingestor(store: MemoryStore, hot: HotState, interpreter: Interpreter) -> Ingestor:
    return Ingestor(store, hot, interpreter)


@pytest.fixture(scope="module")
def state(stores: EmbeddedStores) -> Iterator[SignalState]:
    s = SignalState(stores.redis_url, maxlen=1000)
    yield s
    s.close()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_signal_scorer())


def said(customer: str, texts: list[str], start: int = 0) -> list[Interaction]:
    return [
        Interaction(
            interaction_id=f"{customer}-{start + i}",
            customer_id=customer,
            channel=Channel.SOCIAL,
            direction=Direction.INBOUND,
            occurred_at=NOW - timedelta(days=len(texts) - i),
            text=text,
        )
        for i, text in enumerate(texts)
    ]


def test_recent_memories_are_the_newest_per_customer_as_of(
    store: MemoryStore, ingestor: Ingestor, tenant: str
) -> None:
    ingestor.ingest(tenant, said("alice", COMPLAINTS) + said("bob", COMPLAINTS[:2]), TRACE)
    before_carol = datetime.now(UTC)
    ingestor.ingest(tenant, said("carol", COMPLAINTS[:1]), TRACE)

    recent = store.recent_memories(
        tenant, ["alice", "bob", "carol", "nobody"], limit=3, as_of=before_carol
    )
    assert set(recent) == {"alice", "bob", "carol", "nobody"}
    alice = [r.memory.interaction.interaction_id for r in recent["alice"]]
    assert alice == ["alice-3", "alice-2", "alice-1"]  # newest first, limited
    assert len(recent["bob"]) == 2
    assert recent["carol"] == [] and recent["nobody"] == []  # carol was not known yet
    assert all(r.embedding.shape == (384,) for r in recent["alice"])
    later = store.recent_memories(tenant, ["carol"], limit=3, as_of=datetime.now(UTC))
    assert [r.memory.interaction.interaction_id for r in later["carol"]] == ["carol-0"]


def test_swap_returns_what_it_replaced_and_never_goes_back_in_time(
    state: SignalState, tenant: str
) -> None:
    first = state.swap(tenant, {"c": Scores(100, {"churn_risk": 0.2})})
    assert first == {"c": None}
    second = state.swap(tenant, {"c": Scores(200, {"churn_risk": 0.7}), "d": Scores(5, {})})
    assert second == {"c": {"churn_risk": 0.2}, "d": None}
    # A computation that read fewer memories (older watermark) finished late: left alone.
    assert state.swap(tenant, {"c": Scores(150, {"churn_risk": 0.1})}) == {}
    assert state.swap(tenant, {"c": Scores(200, {"churn_risk": 0.8})}) == {"c": {"churn_risk": 0.7}}


def _collect(feed: SignalFeed, tenant: str, after: str, n: int) -> list[str]:
    async def run() -> list[str]:
        got: list[str] = []
        async for event in feed.events(tenant, after, block_ms=200):
            got.append(f"{event.event_id} {event.customer_id}")
            if len(got) == n:
                break
        await feed.aclose()
        return got

    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def test_the_stream_resumes_after_a_cursor(
    stores: EmbeddedStores,
    store: MemoryStore,
    ingestor: Ingestor,
    state: SignalState,
    predictor: Predictor,
    tenant: str,
) -> None:
    async def last() -> str:
        feed = SignalFeed(stores.redis_url)
        try:
            return await feed.last_id(tenant)
        finally:
            await feed.aclose()

    assert asyncio.run(last()) == "0-0"
    ingestor.ingest(tenant, said("erin", COMPLAINTS), TRACE)
    memories = store.recent_memories(tenant, ["erin"], limit=32, as_of=datetime.now(UTC))["erin"]
    (prediction,) = predictor.explain(memories, NOW, ["support_need"])
    watcher_events = [_signal_event(f"cust-{i}", prediction) for i in range(3)]
    ids = state.publish(tenant, watcher_events)
    assert len(ids) == 3 and asyncio.run(last()) == ids[-1]
    everything = _collect(SignalFeed(stores.redis_url), tenant, "0-0", 3)
    assert everything == [f"{i} cust-{n}" for n, i in enumerate(ids)]
    resumed = _collect(SignalFeed(stores.redis_url), tenant, ids[0], 2)
    assert resumed == [f"{ids[1]} cust-1", f"{ids[2]} cust-2"]


def _signal_event(customer: str, prediction: Prediction) -> SignalEvent:
    return SignalEvent(
        customer_id=customer,
        prediction=prediction,
        previous_score=None,
        threshold=0.5,
        crossing=Crossing.RISING,
        model_version="signals-test",
        evaluated_at=NOW,
        memory_id="m",
        interaction_id="i",
        trace=TRACE,
    )


def _thresholds(tenant: str, value: float) -> TenantConfigs:
    lines = "".join(f"    {name}: {value}\n" for name in SIGNAL_NAMES)
    config = parse_config(f"version: 1\nsignals:\n  thresholds:\n{lines}", f"{tenant}.yaml")
    return TenantConfigs(None, {tenant: config})


def test_watcher_publishes_crossings_once_and_catches_up_after_a_failure(
    stores: EmbeddedStores,
    store: MemoryStore,
    ingestor: Ingestor,
    state: SignalState,
    predictor: Predictor,
    tenant: str,
) -> None:
    outcomes = ingestor.ingest(tenant, said("frank", COMPLAINTS), TRACE)
    newest = outcomes[-1]
    trigger = {"frank": Trigger(newest.memory_id, newest.interaction_id, TRACE)}
    now = datetime.now(UTC)
    memories = store.recent_memories(tenant, ["frank"], limit=32, as_of=now)
    scores = predictor.scores(memories["frank"], now)
    # A threshold just below the lowest score: every prediction rises for a new customer.
    threshold = round(min(scores.values()) - 0.01, 4)
    tenants = _thresholds(tenant, threshold)

    broken = SignalState("redis://127.0.0.1:1/0")
    failing = SignalWatcher(CustomerPredictions(store, predictor), broken, tenants)
    with pytest.raises(StoreUnavailable):
        failing.after_ingest(tenant, trigger, now)

    watcher = SignalWatcher(CustomerPredictions(store, predictor), state, tenants)
    events = watcher.after_ingest(tenant, trigger, now)  # the failed evaluation, caught up
    assert [e.prediction.name for e in events] == list(SIGNAL_NAMES)
    for e in events:
        assert e.crossing is Crossing.RISING and e.previous_score is None
        assert e.threshold == threshold and e.event_id
        assert e.memory_id == newest.memory_id and e.trace == TRACE
        assert e.prediction.score == pytest.approx(scores[e.prediction.name], abs=1e-12)
        x = e.prediction.explanation
        total = x.base_value + sum(m.shap_value for m in x.memories)
        assert abs(total - x.output_value) <= ADDITIVITY_TOLERANCE
        assert {m.memory_id for m in x.memories} == {r.memory.memory_id for r in memories["frank"]}
    # Nothing moved: evaluating again says nothing.
    assert watcher.after_ingest(tenant, trigger, now) == []


def test_profile_predictions_are_explained_and_deterministic(
    store: MemoryStore, ingestor: Ingestor, predictor: Predictor, tenant: str
) -> None:
    ingestor.ingest(tenant, said("gina", COMPLAINTS), TRACE)
    predictions = CustomerPredictions(store, predictor)
    as_of = datetime.now(UTC)
    first = predictions.explained(tenant, "gina", as_of)
    assert [p.name for p in first] == list(SIGNAL_NAMES)
    assert predictions.explained(tenant, "gina", as_of) == first
    scores = predictions.scores(tenant, "gina", as_of, as_of)
    assert scores == {p.name: pytest.approx(p.score, abs=1e-12) for p in first}
    assert all(0.0 < p.score < 1.0 and p.explanation.summary for p in first)
    assert predictions.explained(tenant, "nobody", as_of) == ()
    assert predictions.scores(tenant, "nobody", as_of, as_of) == {}


def test_removing_the_top_attributed_memory_moves_the_prediction_its_way(
    store: MemoryStore, ingestor: Ingestor, predictor: Predictor, tenant: str
) -> None:
    positive = ["Thanks, the crew on my flight were lovely and we landed early!"]
    ingestor.ingest(tenant, said("hugo", COMPLAINTS + positive), TRACE)
    now = datetime.now(UTC)
    memories = store.recent_memories(tenant, ["hugo"], limit=32, as_of=now)["hugo"]
    for prediction in predictor.explain(memories, now):
        top = prediction.explanation.memories[0]
        without = [r for r in memories if r.memory.memory_id != top.memory_id]
        after = predictor.scores(without, now)[prediction.name]
        # A memory that raised the prediction leaves it lower when removed, and vice versa.
        assert (after - prediction.score) * top.shap_value < 0
