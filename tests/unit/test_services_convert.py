"""Protobuf <-> domain translation and the error-to-status mapping."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.core.errors import InvalidArgument, NotFound, StoreUnavailable, Unauthenticated
from memcrm.core.types import (
    SNIPPET_CHARS,
    Channel,
    Direction,
    Enrichment,
    Explanation,
    Memory,
    MemoryAttribution,
    TraceRef,
)
from memcrm.services import convert
from memcrm.services.status import to_status
from memcrm.v1 import common_pb2

WHEN = datetime(2015, 2, 17, 9, 30, 15, 250000, tzinfo=UTC)


def msg(**kw: object) -> common_pb2.Interaction:
    ts = Timestamp()
    ts.FromDatetime(WHEN)
    base: dict[str, object] = {
        "interaction_id": "i-1",
        "customer_id": "c-1",
        "channel": common_pb2.CHANNEL_TICKET,
        "direction": common_pb2.DIRECTION_OUTBOUND,
        "occurred_at": ts,
        "text": "hello",
        "attributes": {"consent.marketing": "false"},
    }
    base.update(kw)
    return common_pb2.Interaction(**base)  # type: ignore[arg-type]


def test_interaction_roundtrip_keeps_every_field() -> None:
    it = convert.interaction(msg(subject="s", actor_id="agent-7", thread_id="t-1"), "interaction")
    assert it.channel is Channel.TICKET and it.direction is Direction.OUTBOUND
    assert it.occurred_at == WHEN
    assert convert.interaction_msg(it) == msg(subject="s", actor_id="agent-7", thread_id="t-1")


def test_missing_time_and_unknown_enums_name_their_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        convert.interaction(common_pb2.Interaction(channel=1), "interactions[3]")
    assert err.value.field == "interactions[3].occurred_at"
    with pytest.raises(InvalidArgument) as err:
        convert.interaction(msg(channel=42), "interaction")
    assert err.value.field == "interaction.channel"


def test_memory_message_carries_its_ingestion_span() -> None:
    it = convert.interaction(msg(), "interaction")
    memory = Memory("m-1", it, Enrichment("all-MiniLM-L6-v2"), WHEN, TraceRef("a" * 32, "b" * 16))
    out = convert.memory_msg(memory)
    assert (out.trace_id, out.span_id) == ("a" * 32, "b" * 16)
    assert out.enrichment.model_version == "all-MiniLM-L6-v2"
    assert out.recorded_at.ToDatetime(tzinfo=UTC) == WHEN


def test_attribution_snippets_are_flat_and_bounded() -> None:
    it = convert.interaction(msg(), "interaction")
    memory = Memory("m-1", it, Enrichment("all-MiniLM-L6-v2"), WHEN, TraceRef("a" * 32, "b" * 16))
    short = replace(memory, interaction=replace(memory.interaction, text="a\n  b"))
    assert MemoryAttribution.of(short, 0.5).snippet == "a b"
    long = replace(memory, interaction=replace(memory.interaction, text="x" * 500))
    cited = MemoryAttribution.of(long, -0.1)
    assert len(cited.snippet) == SNIPPET_CHARS and cited.snippet.endswith("…")
    out = convert.explanation_msg(Explanation("e", 0.0, -0.1, "o", [], [cited], "s")).memories[0]
    assert (out.memory_id, out.snippet, out.shap_value) == (long.memory_id, cited.snippet, -0.1)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidArgument("top_k", "must be at most 100"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED),
        (NotFound("recommendation", "r-1"), grpc.StatusCode.NOT_FOUND),
        (StoreUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_domain_errors_map_to_their_status(exc: Exception, code: grpc.StatusCode) -> None:
    assert to_status(exc, "t" * 32) == (code, exc.args[0])


def test_unexpected_errors_are_internal_without_details() -> None:
    code, details = to_status(KeyError("secret internals"), "f" * 32)
    assert code is grpc.StatusCode.INTERNAL
    assert "secret" not in details and "f" * 32 in details


def test_errors_wrapped_by_ray_are_unwrapped() -> None:
    class Wrapped(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("wrapped")
            self.cause = cause

    code, details = to_status(Wrapped(InvalidArgument("query", "too long")), "0" * 32)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details == "query: too long"


def test_full_enrichment_survives_storage_json_and_the_wire() -> None:
    from memcrm.core.types import Entity, Label
    from memcrm.memory.store import enrichment_from_json, enrichment_to_json

    e = Enrichment(
        model_version="enc=all-MiniLM-L6-v2;heads=h-1",
        sentiment=Label("negative", 0.91),
        sentiment_score=-0.8,
        intents=(Label("lost_or_stolen_card", 0.7), Label("card_not_working", 0.2)),
        issue=Label("Lost Luggage", 0.8),
        entities=(Entity("jane@example.com", "email", 10, 26),),
        objections=(Label("price", 0.6),),
        topics=("baggage",),
        importance=0.75,
        redactions=(Entity("[PAYMENT_CARD]", "payment_card", 30, 44),),
    )
    assert enrichment_from_json(enrichment_to_json(e)) == e
    wire = convert.enrichment_msg(e)
    assert wire.sentiment.name == "negative" and wire.issue.name == "Lost Luggage"
    assert [x.name for x in wire.intents] == ["lost_or_stolen_card", "card_not_working"]
    assert wire.redactions[0].type == "payment_card" and wire.entities[0].end == 26
    assert not convert.enrichment_msg(Enrichment("v")).HasField("sentiment")
