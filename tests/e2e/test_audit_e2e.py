"""Decision records over real gRPC: every NextBestAction answer has a record that matches it,
outcomes are recorded against it, and only auditors may read records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from memcrm.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, KEY_READER, auth, history, ts

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
HISTORY = [
    "@united my bag never arrived in Denver, where is my luggage?",
    "@united still no news about my suitcase, nobody calls back",
    "@united the crew on the way out were lovely though",
]


@pytest.fixture(scope="module")
def decided(
    channel: grpc.Channel,
) -> tuple[str, recommendation_pb2.NextBestActionResponse]:
    customer = f"aud-{uuid.uuid4().hex[:8]}"
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channel)
    ingest.IngestBatch(
        ingestion_pb2.IngestBatchRequest(
            interactions=history(
                customer,
                HISTORY,
                channel=common_pb2.CHANNEL_SOCIAL,
                first=NOW - timedelta(days=5),
                every=timedelta(days=1),
            )
        ),
        metadata=auth(KEY_DEMO),
    )
    nba = recommendation_pb2_grpc.RecommendationServiceStub(channel).NextBestAction(
        recommendation_pb2.NextBestActionRequest(
            customer_id=customer, context="any news about my bag?", top_n=2
        ),
        metadata=auth(KEY_DEMO),
    )
    return customer, nba


def test_the_record_matches_the_answer(
    channel: grpc.Channel, decided: tuple[str, recommendation_pb2.NextBestActionResponse]
) -> None:
    customer, nba = decided
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    got = audit.GetRecommendation(
        audit_pb2.GetRecommendationRequest(recommendation_id=nba.recommendation_id),
        metadata=auth(KEY_DEMO),
    )
    record = got.record
    assert record.recommendation_id == nba.recommendation_id
    assert record.customer_id == customer
    assert record.request.context == "any news about my bag?" and record.request.top_n == 2
    assert list(record.actions) == list(nba.actions)  # explanations included, bit for bit
    assert record.model_version == nba.model_version and len(record.model_sha256) == 64
    assert record.arithmetic.scoring == "float32"  # the default MEMCRM_SCORING_PRECISION
    assert record.arithmetic.context_encoder in ("float32", "bfloat16")
    assert record.trace_id == nba.trace_id and record.decided_at == nba.decided_at
    # Every catalog action is kept: the returned ones ranked, the others with a reason.
    returned = [c for c in record.considered if c.rank > 0]
    assert [c.action_id for c in sorted(returned, key=lambda c: c.rank)] == [
        a.action_id for a in nba.actions
    ]
    others = [c for c in record.considered if c.rank == 0]
    assert others and all(c.reason for c in others)
    cited = {m.memory_id for a in nba.actions for m in a.explanation.memories}
    assert set(record.cited_memory_ids) == cited

    listed = audit.ListRecommendations(
        audit_pb2.ListRecommendationsRequest(customer_id=customer), metadata=auth(KEY_DEMO)
    )
    assert [r.recommendation_id for r in listed.records] == [nba.recommendation_id]


def test_outcomes_are_recorded_against_the_decision(
    channel: grpc.Channel, decided: tuple[str, recommendation_pb2.NextBestActionResponse]
) -> None:
    _, nba = decided
    recommend = recommendation_pb2_grpc.RecommendationServiceStub(channel)
    action = nba.actions[0].action_id
    recommend.RecordOutcome(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=nba.recommendation_id,
            action_id=action,
            outcome=recommendation_pb2.OUTCOME_ACCEPTED,
        ),
        metadata=auth(KEY_DEMO),
    )
    record = (
        audit_pb2_grpc.AuditServiceStub(channel)
        .GetRecommendation(
            audit_pb2.GetRecommendationRequest(recommendation_id=nba.recommendation_id),
            metadata=auth(KEY_DEMO),
        )
        .record
    )
    assert [(o.action_id, o.outcome) for o in record.outcomes] == [
        (action, recommendation_pb2.OUTCOME_ACCEPTED)
    ]

    def fails(
        request: recommendation_pb2.RecordOutcomeRequest, key: str = KEY_DEMO
    ) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as err:
            recommend.RecordOutcome(request, metadata=auth(key))
        return err.value

    unknown = fails(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=str(uuid.uuid4()), action_id=action, outcome=1
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    bad_action = fails(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=nba.recommendation_id, action_id="teleport", outcome=1
        )
    )
    assert bad_action.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "action_id" in (bad_action.details() or "")
    no_outcome = fails(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=nba.recommendation_id, action_id=action
        )
    )
    assert no_outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outcome" in (no_outcome.details() or "")
    other_tenant = fails(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=nba.recommendation_id, action_id=action, outcome=1
        ),
        KEY_OTHER,
    )
    assert other_tenant.code() == grpc.StatusCode.NOT_FOUND


def test_only_auditors_read_records(
    channel: grpc.Channel, decided: tuple[str, recommendation_pb2.NextBestActionResponse]
) -> None:
    customer, nba = decided
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    for key in (KEY_READER, KEY_OTHER):
        with pytest.raises(grpc.RpcError) as err:
            audit.GetRecommendation(
                audit_pb2.GetRecommendationRequest(recommendation_id=nba.recommendation_id),
                metadata=auth(key),
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            audit.ListRecommendations(
                audit_pb2.ListRecommendationsRequest(customer_id=customer), metadata=auth(key)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            audit.ReplayRecommendation(
                audit_pb2.ReplayRecommendationRequest(recommendation_id=nba.recommendation_id),
                metadata=auth(key),
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        audit.GetRecommendation(
            audit_pb2.GetRecommendationRequest(recommendation_id="not-a-uuid"),
            metadata=auth(KEY_DEMO),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_decision_replays_identically_after_the_customer_wrote_again(
    channel: grpc.Channel, decided: tuple[str, recommendation_pb2.NextBestActionResponse]
) -> None:
    customer, nba = decided
    # What happened after the decision must not change its replay.
    ingestion_pb2_grpc.IngestionServiceStub(channel).Ingest(
        ingestion_pb2.IngestRequest(
            interaction=common_pb2.Interaction(
                interaction_id=f"{customer}-later",
                customer_id=customer,
                channel=common_pb2.CHANNEL_EMAIL,
                direction=common_pb2.DIRECTION_INBOUND,
                occurred_at=ts(NOW - timedelta(hours=1)),
                text="Thank you so much, the bag arrived and the crew were great!",
            )
        ),
        metadata=auth(KEY_DEMO),
    )
    replay = audit_pb2_grpc.AuditServiceStub(channel).ReplayRecommendation(
        audit_pb2.ReplayRecommendationRequest(recommendation_id=nba.recommendation_id),
        metadata=auth(KEY_DEMO),
    )
    assert (replay.identical, replay.diff) == (True, "")
    assert len(replay.trace_id) == 32
    with pytest.raises(grpc.RpcError) as err:
        audit_pb2_grpc.AuditServiceStub(channel).ReplayRecommendation(
            audit_pb2.ReplayRecommendationRequest(recommendation_id=str(uuid.uuid4())),
            metadata=auth(KEY_DEMO),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_record_keeps_the_context_under_the_tenants_pii_policy(channel: grpc.Channel) -> None:
    customer = f"pii-{uuid.uuid4().hex[:8]}"
    nba = recommendation_pb2_grpc.RecommendationServiceStub(channel).NextBestAction(
        recommendation_pb2.NextBestActionRequest(
            customer_id=customer, context="card 4111 1111 1111 1111 was charged twice", top_n=1
        ),
        metadata=auth(KEY_DEMO),
    )
    record = (
        audit_pb2_grpc.AuditServiceStub(channel)
        .GetRecommendation(
            audit_pb2.GetRecommendationRequest(recommendation_id=nba.recommendation_id),
            metadata=auth(KEY_DEMO),
        )
        .record
    )
    assert "4111" not in record.request.context
    assert record.request.context.startswith("card ") and "charged twice" in record.request.context
    for action in nba.actions:
        assert "4111" not in action.explanation.summary
        assert all("4111" not in f.value for f in action.explanation.features)
