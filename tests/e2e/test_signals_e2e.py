"""Predictions and WatchSignals over real gRPC through Ray Serve: the profile carries three
explained predictions, and an ingestion that moves a prediction across its threshold emits an
event on the stream, citing the ingested memories and the ingestion's trace."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from memcrm.explain.shapley import ADDITIVITY_TOLERANCE
from memcrm.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    signals_pb2,
    signals_pb2_grpc,
)
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, SIGNALS_STREAM_MAX_S, auth, history

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
NAMES = ["churn_risk", "purchase_propensity", "support_need"]
COMPLAINTS = [
    "My suitcase never arrived and nobody answers the phone, this is the third day.",
    "Still no bag. Your baggage desk keeps hanging up on me.",
    "Flight cancelled again and I was stuck at the airport overnight with no help.",
    "Worst customer service ever, on hold for two hours about my lost luggage. I'm done.",
]


def _additive(x: common_pb2.Explanation) -> bool:
    total = x.base_value + sum(m.shap_value for m in x.memories)
    total += sum(f.shap_value for f in x.features)
    return abs(total - x.output_value) <= ADDITIVITY_TOLERANCE


def _ingest(
    channel: grpc.Channel, customer: str, key: str = KEY_DEMO
) -> ingestion_pb2.IngestBatchResponse:
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    items = history(
        customer,
        COMPLAINTS,
        channel=common_pb2.CHANNEL_SOCIAL,
        first=NOW - timedelta(days=4),
        every=timedelta(days=1),
    )
    response = stub.IngestBatch(
        ingestion_pb2.IngestBatchRequest(interactions=items), metadata=auth(key)
    )
    assert not any(r.error for r in response.results)
    return response


def test_watch_signals_emits_when_an_ingestion_crosses_a_threshold(
    channel: grpc.Channel,
) -> None:
    customer = f"sig-{uuid.uuid4().hex[:8]}"
    signals = signals_pb2_grpc.SignalServiceStub(channel)
    # From the start of the retained stream, for this customer only: no race with subscribing.
    stream = signals.WatchSignals(
        signals_pb2.WatchSignalsRequest(customer_ids=[customer], after="0-0"),
        metadata=auth(KEY_DEMO),
        timeout=120,
    )
    try:
        ingested = _ingest(channel, customer)
        event = next(stream)
    finally:
        stream.cancel()
    memory_ids = {r.memory_id for r in ingested.results}
    assert event.customer_id == customer and event.event_id
    assert event.crossing == signals_pb2.SIGNAL_CROSSING_RISING
    assert not event.HasField("previous_score")  # a new customer
    assert event.prediction.name in NAMES and event.prediction.score >= event.threshold == 0.5
    assert event.model_version.startswith("signals-")
    assert event.memory_id in memory_ids and event.interaction_id == f"{customer}-3"
    assert event.trace_id == ingested.trace_id and len(event.span_id) == 16
    explanation = event.prediction.explanation
    assert _additive(explanation) and explanation.summary
    assert {m.memory_id for m in explanation.memories} == memory_ids
    assert all(m.trace_id == ingested.trace_id for m in explanation.memories)

    # Resuming after that event skips it; another tenant never sees it.
    resumed = signals.WatchSignals(
        signals_pb2.WatchSignalsRequest(customer_ids=[customer], after=event.event_id),
        metadata=auth(KEY_DEMO),
        timeout=60,
    )
    other = signals.WatchSignals(
        signals_pb2.WatchSignalsRequest(customer_ids=[customer], after="0-0"),
        metadata=auth(KEY_OTHER),
        timeout=60,
    )
    for quiet in (resumed, other):
        seen = list(quiet)  # until the stream's lifetime ends it
        assert all(e.event_id != event.event_id for e in seen)
        assert all(e.prediction.name != event.prediction.name for e in seen)


def test_watch_signals_refuses_bad_requests(channel: grpc.Channel) -> None:
    signals = signals_pb2_grpc.SignalServiceStub(channel)
    cases = [
        (signals_pb2.WatchSignalsRequest(names=["churn"]), KEY_DEMO, "names[0]"),
        (signals_pb2.WatchSignalsRequest(after="latest"), KEY_DEMO, "after"),
        (signals_pb2.WatchSignalsRequest(customer_ids=["bad id"]), KEY_DEMO, "customer_ids[0]"),
    ]
    for request, key, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            next(signals.WatchSignals(request, metadata=auth(key), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field)
    with pytest.raises(grpc.RpcError) as err:
        next(
            signals.WatchSignals(
                signals_pb2.WatchSignalsRequest(), metadata=auth("nope"), timeout=10
            )
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_profile_carries_three_explained_predictions(channel: grpc.Channel) -> None:
    customer = f"prof-{uuid.uuid4().hex[:8]}"
    ingested = _ingest(channel, customer)
    memories = memory_pb2_grpc.MemoryServiceStub(channel)
    profile = memories.GetCustomerProfile(
        memory_pb2.GetCustomerProfileRequest(customer_id=customer), metadata=auth(KEY_DEMO)
    ).profile
    assert [p.name for p in profile.predictions] == NAMES
    memory_ids = {r.memory_id for r in ingested.results}
    for p in profile.predictions:
        assert 0.0 < p.score < 1.0
        assert _additive(p.explanation) and p.explanation.summary
        assert {m.memory_id for m in p.explanation.memories} == memory_ids


def test_streams_end_by_themselves_and_free_their_slot(channel: grpc.Channel) -> None:
    """A stream ends with OK after MEMCRM_SIGNALS_STREAM_MAX_S; a replica serves at most
    MEMCRM_SIGNALS_MAX_WATCHERS (8) at once, and a cancelled stream's slot is free again
    within that lifetime (Ray Serve does not always pass the cancellation on to the replica)."""
    customer = f"slot-{uuid.uuid4().hex[:8]}"
    _ingest(channel, customer)
    signals = signals_pb2_grpc.SignalServiceStub(channel)
    request = signals_pb2.WatchSignalsRequest(customer_ids=[customer], after="0-0")

    started = time.monotonic()
    events = list(signals.WatchSignals(request, metadata=auth(KEY_DEMO), timeout=60))
    assert events and all(e.customer_id == customer for e in events)  # then it ended, OK
    assert time.monotonic() - started >= SIGNALS_STREAM_MAX_S

    for _ in range(2):  # twice the limit, in two rounds
        for _ in range(8):
            stream = signals.WatchSignals(request, metadata=auth(KEY_DEMO), timeout=60)
            try:
                assert next(stream).customer_id == customer
            finally:
                stream.cancel()
        time.sleep(SIGNALS_STREAM_MAX_S + 2.0)
