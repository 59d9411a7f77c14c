"""GetCustomerProfile over real gRPC through Ray Serve: an ingested complaint becomes an open
issue and a stated preference a preference, each citing the memory ids ingestion returned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from memcrm.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
)
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, auth, ts

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
COMPLAINT = (
    "@united my bag never made it to Houston, three days and no update. Where is my luggage?"
)
PREFERENCE = "Please contact me by email from now on."


@pytest.fixture(scope="module")
def stubs(
    channel: grpc.Channel,
) -> tuple[ingestion_pb2_grpc.IngestionServiceStub, memory_pb2_grpc.MemoryServiceStub]:
    return ingestion_pb2_grpc.IngestionServiceStub(channel), memory_pb2_grpc.MemoryServiceStub(
        channel
    )


def cited(p: memory_pb2.CustomerProfile) -> set[str]:
    items = [*p.open_issues, *p.objections, *p.preferences]
    ids = {i for item in items for i in item.memory_ids}
    ids |= {c.memory_id for c in p.last_contact}
    return ids | {x.memory_id for x in p.sentiment_trend.points}


def test_the_profile_cites_the_ingested_complaint_and_preference(
    stubs: tuple[ingestion_pb2_grpc.IngestionServiceStub, memory_pb2_grpc.MemoryServiceStub],
) -> None:
    ingest, memory = stubs
    customer = f"profile-{uuid.uuid4().hex[:8]}"
    before = datetime.now(UTC)
    complaint = ingest.Ingest(
        ingestion_pb2.IngestRequest(
            interaction=common_pb2.Interaction(
                interaction_id=f"{customer}-1",
                customer_id=customer,
                channel=common_pb2.CHANNEL_SOCIAL,
                direction=common_pb2.DIRECTION_INBOUND,
                occurred_at=ts(T0),
                text=COMPLAINT,
            )
        ),
        metadata=auth(KEY_DEMO),
        timeout=60,
    )
    preference = ingest.Ingest(
        ingestion_pb2.IngestRequest(
            interaction=common_pb2.Interaction(
                interaction_id=f"{customer}-2",
                customer_id=customer,
                channel=common_pb2.CHANNEL_EMAIL,
                direction=common_pb2.DIRECTION_INBOUND,
                occurred_at=ts(T0 + timedelta(days=1)),
                text=PREFERENCE,
            )
        ),
        metadata=auth(KEY_DEMO),
        timeout=60,
    )
    assert complaint.memory_id and preference.memory_id
    assert complaint.enrichment.issue.name == "Lost Luggage"

    response = memory.GetCustomerProfile(
        memory_pb2.GetCustomerProfileRequest(customer_id=customer),
        metadata=auth(KEY_DEMO),
        timeout=60,
    )
    p = response.profile
    assert response.trace_id
    assert p.customer_id == customer and p.interaction_count == 2
    assert p.first_seen.ToDatetime(UTC) == T0
    assert p.as_of.ToDatetime(UTC) >= before
    assert [list(i.memory_ids) for i in p.open_issues] == [[complaint.memory_id]]
    assert p.open_issues[0].text.startswith("Lost Luggage, open since 5 October 2026")
    (stated,) = [i for i in p.preferences if i.text.startswith("Prefers to be contacted by email")]
    assert list(stated.memory_ids) == [preference.memory_id]
    assert cited(p) == {complaint.memory_id, preference.memory_id}
    assert "Open issue: Lost Luggage" in p.summary
    assert "asked to be contacted by email" in p.summary
    assert [(c.channel, c.memory_id) for c in p.last_contact] == [
        (common_pb2.CHANNEL_EMAIL, preference.memory_id),
        (common_pb2.CHANNEL_SOCIAL, complaint.memory_id),
    ]

    # Nothing had been recorded before the first ingestion; the other tenant sees nothing.
    for key, as_of in ((KEY_DEMO, before), (KEY_OTHER, None)):
        request = memory_pb2.GetCustomerProfileRequest(customer_id=customer)
        if as_of is not None:
            request.as_of.CopyFrom(ts(as_of))
        with pytest.raises(grpc.RpcError) as err:
            memory.GetCustomerProfile(request, metadata=auth(key), timeout=60)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def test_unknown_customer_is_not_found_and_a_missing_id_is_invalid(
    stubs: tuple[ingestion_pb2_grpc.IngestionServiceStub, memory_pb2_grpc.MemoryServiceStub],
) -> None:
    _, memory = stubs
    with pytest.raises(grpc.RpcError) as err:
        memory.GetCustomerProfile(
            memory_pb2.GetCustomerProfileRequest(customer_id=f"nobody-{uuid.uuid4().hex[:8]}"),
            metadata=auth(KEY_DEMO),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        memory.GetCustomerProfile(
            memory_pb2.GetCustomerProfileRequest(), metadata=auth(KEY_DEMO), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith("customer_id"), err.value.details()
