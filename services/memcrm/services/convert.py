"""Protobuf <-> domain translation. Nothing else in memcrm touches generated messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import (
    SIGNAL_NAMES,
    CustomerProfile,
    DecisionRecord,
    Enrichment,
    Entity,
    Explanation,
    IngestOutcome,
    Interaction,
    Label,
    Memory,
    Outcome,
    Prediction,
    ProfileItem,
    RecalledMemory,
    RecommendedAction,
    SignalEvent,
    SignalFilter,
)
from memcrm.core.validation import (
    MAX_WATCHED_CUSTOMERS,
    check_channel,
    check_direction,
    check_id,
)
from memcrm.memory.signals import check_cursor
from memcrm.v1 import (
    audit_pb2,
    common_pb2,
    ingestion_pb2,
    memory_pb2,
    models_pb2,
    recommendation_pb2,
    signals_pb2,
)

if TYPE_CHECKING:
    from memcrm.models.registry import ModelEntry


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def optional_time(msg: Timestamp, has: bool, field: str) -> datetime | None:
    if not has:
        return None
    try:
        return msg.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def as_of(
    request: memory_pb2.RecallRequest
    | memory_pb2.GetTimelineRequest
    | memory_pb2.GetCustomerProfileRequest
    | memory_pb2.SearchMemoriesRequest
    | recommendation_pb2.NextBestActionRequest,
) -> datetime | None:
    """The request's optional ``as_of``; unset means now."""
    return optional_time(request.as_of, request.HasField("as_of"), "as_of")


def interaction(msg: common_pb2.Interaction, prefix: str) -> Interaction:
    """Structural checks only; the domain validates the contract's rules."""
    occurred = optional_time(msg.occurred_at, msg.HasField("occurred_at"), f"{prefix}.occurred_at")
    if occurred is None:
        raise InvalidArgument(f"{prefix}.occurred_at", "is required")
    return Interaction(
        interaction_id=msg.interaction_id,
        customer_id=msg.customer_id,
        channel=check_channel(f"{prefix}.channel", msg.channel, required=True),
        direction=check_direction(f"{prefix}.direction", msg.direction),
        occurred_at=occurred,
        text=msg.text,
        subject=msg.subject,
        actor_id=msg.actor_id,
        thread_id=msg.thread_id,
        attributes=dict(msg.attributes),
    )


def interaction_msg(it: Interaction) -> common_pb2.Interaction:
    return common_pb2.Interaction(
        interaction_id=it.interaction_id,
        customer_id=it.customer_id,
        channel=int(it.channel),  # type: ignore[arg-type]
        direction=int(it.direction),  # type: ignore[arg-type]
        occurred_at=timestamp(it.occurred_at),
        text=it.text,
        subject=it.subject,
        actor_id=it.actor_id,
        thread_id=it.thread_id,
        attributes=dict(it.attributes),
    )


def label_msg(x: Label) -> common_pb2.Label:
    return common_pb2.Label(name=x.name, confidence=x.confidence)


def entity_msg(x: Entity) -> common_pb2.Entity:
    return common_pb2.Entity(text=x.text, type=x.type, start=x.start, end=x.end)


def enrichment_msg(e: Enrichment | None) -> common_pb2.Enrichment:
    if e is None:
        return common_pb2.Enrichment()
    return common_pb2.Enrichment(
        model_version=e.model_version,
        sentiment=label_msg(e.sentiment) if e.sentiment else None,
        sentiment_score=e.sentiment_score,
        intents=[label_msg(x) for x in e.intents],
        issue=label_msg(e.issue) if e.issue else None,
        entities=[entity_msg(x) for x in e.entities],
        objections=[label_msg(x) for x in e.objections],
        topics=list(e.topics),
        importance=e.importance,
        redactions=[entity_msg(x) for x in e.redactions],
    )


def memory_msg(m: Memory) -> common_pb2.Memory:
    return common_pb2.Memory(
        memory_id=m.memory_id,
        interaction=interaction_msg(m.interaction),
        enrichment=enrichment_msg(m.enrichment),
        recorded_at=timestamp(m.recorded_at),
        trace_id=m.ingest_trace.trace_id,
        span_id=m.ingest_trace.span_id,
        near_duplicate_of=m.near_duplicate_of,
        version=m.version,
    )


def ingest_response(o: IngestOutcome, trace_id: str) -> ingestion_pb2.IngestResponse:
    return ingestion_pb2.IngestResponse(
        interaction_id=o.interaction_id,
        memory_id=o.memory_id,
        duplicate=o.duplicate,
        enrichment=enrichment_msg(o.enrichment),
        trace_id=trace_id,
    )


def ingest_result(o: IngestOutcome) -> ingestion_pb2.IngestResult:
    return ingestion_pb2.IngestResult(
        interaction_id=o.interaction_id,
        memory_id=o.memory_id,
        duplicate=o.duplicate,
        enrichment=enrichment_msg(o.enrichment) if o.enrichment else None,
        error=o.error,
    )


def recalled_msg(r: RecalledMemory) -> memory_pb2.RecalledMemory:
    return memory_pb2.RecalledMemory(
        memory=memory_msg(r.memory),
        score=r.score,
        parts=memory_pb2.ScoreParts(
            semantic=r.parts.semantic,
            lexical=r.parts.lexical,
            recency=r.parts.recency,
            importance=r.parts.importance,
            context=r.parts.context,
        ),
    )


def search_bounds(
    request: memory_pb2.SearchMemoriesRequest,
) -> tuple[datetime | None, datetime | None]:
    """The request's optional ``occurred_after`` / ``occurred_before``."""
    after = optional_time(
        request.occurred_after, request.HasField("occurred_after"), "occurred_after"
    )
    before = optional_time(
        request.occurred_before, request.HasField("occurred_before"), "occurred_before"
    )
    return after, before


def profile_msg(p: CustomerProfile) -> memory_pb2.CustomerProfile:
    def items(xs: Sequence[ProfileItem]) -> list[memory_pb2.ProfileItem]:
        return [memory_pb2.ProfileItem(text=x.text, memory_ids=list(x.memory_ids)) for x in xs]

    trend = p.sentiment_trend
    msg = memory_pb2.CustomerProfile(
        customer_id=p.customer_id,
        interaction_count=p.interaction_count,
        summary=p.summary,
        open_issues=items(p.open_issues),
        objections=items(p.objections),
        preferences=items(p.preferences),
        sentiment_trend=memory_pb2.SentimentTrend(
            direction=trend.direction,
            recent=trend.recent,
            previous=trend.previous,
            points=[
                memory_pb2.SentimentPoint(at=timestamp(x.at), score=x.score, memory_id=x.memory_id)
                for x in trend.points
            ],
        ),
        predictions=[prediction_msg(x) for x in p.predictions],
        last_contact=[
            memory_pb2.ChannelContact(
                channel=int(x.channel),  # type: ignore[arg-type]
                at=timestamp(x.at),
                memory_id=x.memory_id,
            )
            for x in p.last_contact
        ],
        as_of=timestamp(p.as_of),
    )
    if p.first_seen is not None:
        msg.first_seen.CopyFrom(timestamp(p.first_seen))
    if p.last_seen is not None:
        msg.last_seen.CopyFrom(timestamp(p.last_seen))
    return msg


def explanation_msg(e: Explanation) -> common_pb2.Explanation:
    return common_pb2.Explanation(
        explainer=e.explainer,
        base_value=e.base_value,
        output_value=e.output_value,
        output_name=e.output_name,
        summary=e.summary,
        features=[
            common_pb2.FeatureAttribution(feature=f.feature, value=f.value, shap_value=f.shap_value)
            for f in e.features
        ],
        memories=[
            common_pb2.MemoryAttribution(
                memory_id=a.memory_id,
                interaction_id=a.interaction_id,
                shap_value=a.shap_value,
                trace_id=a.ingest_trace.trace_id,
                span_id=a.ingest_trace.span_id,
                snippet=a.snippet,
                occurred_at=timestamp(a.occurred_at),
            )
            for a in e.memories
        ],
    )


def action_msg(a: RecommendedAction) -> recommendation_pb2.RecommendedAction:
    return recommendation_pb2.RecommendedAction(
        action_id=a.action_id,
        title=a.title,
        rank=a.rank,
        score=a.score,
        propensity=a.propensity,
        value=a.value,
        explanation=explanation_msg(a.explanation),
    )


def decision_msg(r: DecisionRecord) -> recommendation_pb2.NextBestActionResponse:
    return recommendation_pb2.NextBestActionResponse(
        recommendation_id=r.recommendation_id,
        trace_id=r.trace_id,
        model_version=r.model_version,
        decided_at=timestamp(r.decided_at),
        actions=[action_msg(a) for a in r.actions],
    )


def outcome(value: int) -> Outcome:
    try:
        chosen = Outcome(value)
    except ValueError:
        raise InvalidArgument("outcome", f"unknown value {value}") from None
    if chosen is Outcome.UNSPECIFIED:
        raise InvalidArgument("outcome", "is required")
    return chosen


def record_bounds(
    request: audit_pb2.ListRecommendationsRequest,
) -> tuple[datetime | None, datetime | None]:
    since = optional_time(request.since, request.HasField("since"), "since")
    until = optional_time(request.until, request.HasField("until"), "until")
    return since, until


def record_msg(r: DecisionRecord) -> audit_pb2.DecisionRecord:
    req = r.request
    request = recommendation_pb2.NextBestActionRequest(
        customer_id=req.customer_id,
        context=req.context,
        channel=int(req.channel),  # type: ignore[arg-type]
        top_n=req.top_n,
    )
    if req.as_of is not None:
        request.as_of.CopyFrom(timestamp(req.as_of))
    return audit_pb2.DecisionRecord(
        recommendation_id=r.recommendation_id,
        customer_id=req.customer_id,
        request=request,
        actions=[action_msg(a) for a in r.actions],
        considered=[
            audit_pb2.ConsideredAction(
                action_id=c.action_id,
                title=c.title,
                log_odds=c.log_odds,
                propensity=c.propensity,
                value=c.value,
                score=c.score,
                rank=c.rank,
                reason=c.reason,
                context_weight=c.context_weight,
                lever=c.lever,
                filtered_by=c.filtered_by,
                policy=c.policy,
                reads_json=c.reads_json,
            )
            for c in r.considered
        ],
        model_version=r.model_version,
        model_sha256=r.model_sha256,
        cited_memory_ids=list(r.cited_memory_ids),
        trace_id=r.trace_id,
        decided_at=timestamp(r.decided_at),
        as_of=timestamp(r.as_of),
        outcomes=[
            audit_pb2.RecordedOutcome(
                action_id=o.action_id,
                outcome=int(o.outcome),  # type: ignore[arg-type]
                occurred_at=timestamp(o.occurred_at),
                recorded_at=timestamp(o.recorded_at),
            )
            for o in r.outcomes
        ],
        catalog_version=r.catalog_version,
        arithmetic=audit_pb2.Arithmetic(
            scoring=r.arithmetic.scoring, context_encoder=r.arithmetic.context_encoder
        ),
    )


def model_version_msg(e: ModelEntry) -> models_pb2.ModelVersion:
    return models_pb2.ModelVersion(
        version=e.version,
        sha256=e.sha256,
        created_at=e.created_at,
        default=e.default,
        metrics_json=json.dumps(e.metrics, sort_keys=True),
        training_data_json=json.dumps(e.training_data, sort_keys=True),
    )


def prediction_msg(x: Prediction) -> memory_pb2.Prediction:
    return memory_pb2.Prediction(
        name=x.name, score=x.score, explanation=explanation_msg(x.explanation)
    )


def signal_filter(msg: signals_pb2.WatchSignalsRequest) -> SignalFilter:
    """The stream's filters; bad names or customer ids are INVALID_ARGUMENT naming the field."""
    for i, name in enumerate(msg.names):
        if name not in SIGNAL_NAMES:
            raise InvalidArgument(
                f"names[{i}]", f"unknown prediction {name!r}; known: {', '.join(SIGNAL_NAMES)}"
            )
    if len(msg.customer_ids) > MAX_WATCHED_CUSTOMERS:
        raise InvalidArgument("customer_ids", f"at most {MAX_WATCHED_CUSTOMERS}")
    for i, customer_id in enumerate(msg.customer_ids):
        check_id(f"customer_ids[{i}]", customer_id)
    if msg.after:
        check_cursor(msg.after)
    return SignalFilter(
        names=frozenset(msg.names),
        customer_ids=frozenset(msg.customer_ids),
        rising_only=msg.rising_only,
    )


def signal_msg(e: SignalEvent) -> signals_pb2.WatchSignalsResponse:
    msg = signals_pb2.WatchSignalsResponse(
        event_id=e.event_id,
        customer_id=e.customer_id,
        prediction=prediction_msg(e.prediction),
        threshold=e.threshold,
        crossing=int(e.crossing),  # type: ignore[arg-type]
        model_version=e.model_version,
        evaluated_at=timestamp(e.evaluated_at),
        memory_id=e.memory_id,
        interaction_id=e.interaction_id,
        trace_id=e.trace.trace_id,
        span_id=e.trace.span_id,
    )
    if e.previous_score is not None:
        msg.previous_score = e.previous_score
    return msg
