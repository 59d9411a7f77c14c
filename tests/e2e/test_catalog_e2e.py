"""Tenant catalogs and their policies over real gRPC: a catalog file takes effect without a
restart, a broken one is refused while its tenant keeps the catalog it had, and a recorded
rejection suppresses the action in the next decision's record."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, auth, history

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)

CATALOG = """
version: {version}
actions:
{actions}
"""
TRACE = """  - id: baggage_trace
    title: Trace the bag
    description: Open a baggage trace and keep the customer updated.
    channels: [email]
    value: 3.0
"""
REBOOK = """  - id: rebooking_assist
    title: Rebook the flight
    description: Rebook the customer on the next good connection.
    channels: [email]
    value: 3.0
"""


def ingest(channel: grpc.Channel, key: str, customer: str, texts: list[str]) -> None:
    ingestion_pb2_grpc.IngestionServiceStub(channel).IngestBatch(
        ingestion_pb2.IngestBatchRequest(
            interactions=history(
                customer,
                texts,
                channel=common_pb2.CHANNEL_EMAIL,
                first=NOW - timedelta(days=3),
                every=timedelta(days=1),
            )
        ),
        metadata=auth(key),
    )


def nba(
    channel: grpc.Channel, key: str, customer: str, top_n: int = 6
) -> recommendation_pb2.NextBestActionResponse:
    response: recommendation_pb2.NextBestActionResponse = (
        recommendation_pb2_grpc.RecommendationServiceStub(channel).NextBestAction(
            recommendation_pb2.NextBestActionRequest(
                customer_id=customer,
                context="my flight was cancelled and my bag is lost",
                top_n=top_n,
            ),
            metadata=auth(key),
        )
    )
    return response


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(0.25)


@pytest.fixture
def other_catalog(catalogs_dir: Path) -> Iterator[Path]:
    path = catalogs_dir / "other.yaml"
    yield path
    path.unlink(missing_ok=True)


def test_a_catalog_file_takes_effect_and_a_broken_one_is_refused(
    channel: grpc.Channel, other_catalog: Path
) -> None:
    customer = f"cat-{uuid.uuid4().hex[:8]}"
    ingest(channel, KEY_OTHER, customer, ["My flight was cancelled", "My bag never arrived"])

    def returned() -> set[str]:
        return {a.action_id for a in nba(channel, KEY_OTHER, customer).actions}

    assert len(returned()) > 2, "the built-in catalog to begin with"
    other_catalog.write_text(CATALOG.format(version="other-1", actions=TRACE + REBOOK))
    eventually(lambda: returned() == {"baggage_trace", "rebooking_assist"}, "catalog other-1")
    other_catalog.write_text(CATALOG.format(version="other-2", actions=TRACE))
    eventually(lambda: returned() == {"baggage_trace"}, "catalog other-2")

    broken = TRACE + REBOOK + "    eligibility: ['profile.shoe_size > 42']\n"
    other_catalog.write_text(CATALOG.format(version="other-3", actions=broken))
    time.sleep(2.0)  # four reload periods: the broken file has been read and refused
    assert returned() == {"baggage_trace"}, "the tenant keeps other-2"

    other_catalog.unlink()
    eventually(lambda: len(returned()) > 2, "back to the built-in catalog")


def test_a_rejection_suppresses_the_action_in_the_next_record(channel: grpc.Channel) -> None:
    customer = f"sup-{uuid.uuid4().hex[:8]}"
    ingest(channel, KEY_DEMO, customer, ["Nobody at your call centre can help me, third call"])
    audit = audit_pb2_grpc.AuditServiceStub(channel)

    def record(recommendation_id: str) -> audit_pb2.DecisionRecord:
        got: audit_pb2.DecisionRecord = audit.GetRecommendation(
            audit_pb2.GetRecommendationRequest(recommendation_id=recommendation_id),
            metadata=auth(KEY_DEMO),
        ).record
        return got

    first = nba(channel, KEY_DEMO, customer)
    considered = {c.action_id: c for c in record(first.recommendation_id).considered}
    assert considered["escalate_to_agent"].filtered_by == ""
    assert record(first.recommendation_id).catalog_version == "airline-1"
    recommendation_pb2_grpc.RecommendationServiceStub(channel).RecordOutcome(
        recommendation_pb2.RecordOutcomeRequest(
            recommendation_id=first.recommendation_id,
            action_id="escalate_to_agent",
            outcome=recommendation_pb2.OUTCOME_REJECTED,
        ),
        metadata=auth(KEY_DEMO),
    )
    second = nba(channel, KEY_DEMO, customer)
    assert "escalate_to_agent" not in {a.action_id for a in second.actions}
    escalate = next(
        c for c in record(second.recommendation_id).considered if c.action_id == "escalate_to_agent"
    )
    assert (escalate.filtered_by, escalate.policy, escalate.rank) == ("suppression", "suppress", 0)
    assert escalate.reads_json and escalate.propensity > 0
