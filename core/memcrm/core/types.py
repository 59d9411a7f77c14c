"""Domain types shared by memory, models, explain and decisions.

They mirror the API v1 contract but carry no protobuf: the service layer translates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from memcrm.core.text import snippet

EMBEDDING_DIM = 384


class Channel(IntEnum):
    """Values equal memcrm.v1.Channel's."""

    UNSPECIFIED = 0
    EMAIL = 1
    CHAT = 2
    VOICE = 3
    SMS = 4
    SOCIAL = 5
    MEETING = 6
    TICKET = 7
    WEB = 8
    PURCHASE = 9


class Direction(IntEnum):
    """Values equal memcrm.v1.Direction's."""

    UNSPECIFIED = 0
    INBOUND = 1
    OUTBOUND = 2


ROLES = frozenset({"writer", "reader", "recommender", "auditor", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and roles an API key stands for."""

    tenant_id: str
    roles: frozenset[str]
    key_id: str = ""  # memcrm.core.auth.key_id of the API key: who acted, in records


@dataclass(frozen=True, slots=True)
class TraceRef:
    """A span's identity in W3C hex form (32 and 16 lowercase hex characters)."""

    trace_id: str
    span_id: str


@dataclass(frozen=True, slots=True)
class Interaction:
    """One thing that happened between the company and a customer."""

    interaction_id: str
    customer_id: str
    channel: Channel
    occurred_at: datetime
    direction: Direction = Direction.UNSPECIFIED
    text: str = ""
    subject: str = ""
    actor_id: str = ""
    thread_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Label:
    """A classification with its confidence in 0..1."""

    name: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Entity:
    """A span of the stored text: ``text == stored_text[start:end]`` (character offsets)."""

    text: str
    type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What the system understood from an interaction.

    ``redactions`` are the spans that the tenant's PII policy replaced before the text was
    stored and embedded: ``text`` is the placeholder now in the stored text, never the original.
    """

    model_version: str
    sentiment: Label | None = None
    sentiment_score: float = 0.0
    intents: tuple[Label, ...] = ()
    issue: Label | None = None
    entities: tuple[Entity, ...] = ()
    objections: tuple[Label, ...] = ()
    topics: tuple[str, ...] = ()
    importance: float = 0.0
    redactions: tuple[Entity, ...] = ()


@dataclass(frozen=True, slots=True)
class Memory:
    """A remembered interaction."""

    memory_id: str
    interaction: Interaction
    enrichment: Enrichment
    recorded_at: datetime
    ingest_trace: TraceRef
    version: int = 1
    # The first memory of this memory's near-duplicate cluster, when it has one.
    near_duplicate_of: str = ""


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """A recalled memory's score is the sum of these weighted parts (see memory.ranking)."""

    semantic: float
    lexical: float = 0.0
    recency: float = 0.0
    importance: float = 0.0
    # What the memory's neighbours in the same conversation add (a reply to a matching turn).
    context: float = 0.0


@dataclass(frozen=True, slots=True)
class RecalledMemory:
    memory: Memory
    score: float
    parts: ScoreParts
    # The stored embedding (EMBEDDING_DIM float32, L2-normalised), so decisions need not re-embed.
    embedding: NDArray[np.float32] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """The answer for one interaction: stored (or found stored) or rejected with a reason."""

    interaction_id: str
    memory_id: str = ""
    duplicate: bool = False
    enrichment: Enrichment | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class TimelinePage:
    memories: list[Memory]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class FeatureAttribution:
    """A named feature group's SHAP value; ``value`` is the group's value, readable."""

    feature: str
    value: str
    shap_value: float


SNIPPET_CHARS = 160


@dataclass(frozen=True, slots=True)
class MemoryAttribution:
    """One remembered interaction's share of a decision, and what an auditor needs to find it
    (the memory itself stays in PostgreSQL; the decision record keeps this citation)."""

    memory_id: str
    interaction_id: str
    shap_value: float
    ingest_trace: TraceRef
    snippet: str
    occurred_at: datetime

    @classmethod
    def of(cls, memory: Memory, shap_value: float) -> MemoryAttribution:
        it = memory.interaction
        return cls(
            memory_id=memory.memory_id,
            interaction_id=it.interaction_id,
            shap_value=shap_value,
            ingest_trace=memory.ingest_trace,
            snippet=snippet(it.text or it.subject, SNIPPET_CHARS),
            occurred_at=it.occurred_at,
        )


@dataclass(frozen=True, slots=True)
class Explanation:
    """SHAP values of one game whose players are recalled memories and named feature groups.

    ``base_value + sum(features) + sum(memories) == output_value`` within 1e-4.
    """

    explainer: str
    base_value: float
    output_value: float
    output_name: str
    features: list[FeatureAttribution]
    memories: list[MemoryAttribution]  # largest |shap_value| first
    summary: str


@dataclass(frozen=True, slots=True)
class RecommendedAction:
    action_id: str
    title: str
    rank: int
    score: float
    propensity: float
    value: float
    explanation: Explanation


@dataclass(frozen=True, slots=True)
class Decision:
    """What the recommender answered, before the service adds ids, times and trace."""

    actions: list[RecommendedAction]
    model_version: str
    model_sha256: str


@dataclass(frozen=True, slots=True)
class ProfileItem:
    """One claim about a customer and the memories it rests on."""

    text: str
    memory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChannelContact:
    channel: Channel
    at: datetime
    memory_id: str


@dataclass(frozen=True, slots=True)
class SentimentPoint:
    at: datetime
    score: float
    memory_id: str


@dataclass(frozen=True, slots=True)
class SentimentTrend:
    direction: str  # improving | steady | worsening | unknown
    recent: float
    previous: float
    points: tuple[SentimentPoint, ...]


@dataclass(frozen=True, slots=True)
class Prediction:
    name: str
    score: float
    explanation: Explanation


# The predictions every customer profile carries (memcrm.decisions.predictions), in this order.
SIGNAL_NAMES: tuple[str, ...] = ("churn_risk", "purchase_propensity", "support_need")


class Crossing(IntEnum):
    """Which way a prediction passed its tenant threshold; values equal memcrm.v1's."""

    UNSPECIFIED = 0
    RISING = 1  # from below the threshold to at or above it
    FALLING = 2  # from at or above it to below it


@dataclass(frozen=True, slots=True)
class SignalEvent:
    """A customer's prediction crossed its tenant threshold after an ingestion.

    ``previous_score`` is None when the customer had no prediction before (a new customer);
    such a customer counts as below every threshold. ``event_id`` is assigned by the stream
    that delivers the event (empty before it is published) and is the cursor to resume after.
    """

    customer_id: str
    prediction: Prediction
    previous_score: float | None
    threshold: float
    crossing: Crossing
    model_version: str
    evaluated_at: datetime
    # The ingestion whose memories moved the prediction (its newest memory) and its trace.
    memory_id: str
    interaction_id: str
    trace: TraceRef
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class SignalFilter:
    """What one WatchSignals stream wants; empty sets mean everything."""

    names: frozenset[str] = frozenset()
    customer_ids: frozenset[str] = frozenset()
    rising_only: bool = False

    def matches(self, event: SignalEvent) -> bool:
        return (
            (not self.names or event.prediction.name in self.names)
            and (not self.customer_ids or event.customer_id in self.customer_ids)
            and (not self.rising_only or event.crossing is Crossing.RISING)
        )


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """What is known about a customer as of a moment; every claim cites memory ids."""

    customer_id: str
    as_of: datetime
    interaction_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    summary: str
    open_issues: tuple[ProfileItem, ...]
    objections: tuple[ProfileItem, ...]
    preferences: tuple[ProfileItem, ...]
    sentiment_trend: SentimentTrend
    last_contact: tuple[ChannelContact, ...]
    predictions: tuple[Prediction, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Tenant-wide search bounds (SearchMemories)."""

    as_of: datetime
    channels: tuple[Channel, ...] = ()
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None
    one_per_customer: bool = False


class Outcome(IntEnum):
    """What came of a recommended action (values match memcrm.v1.Outcome)."""

    UNSPECIFIED = 0
    ACCEPTED = 1
    REJECTED = 2
    CONVERTED = 3
    NO_RESPONSE = 4


@dataclass(frozen=True, slots=True)
class ConsideredAction:
    """One catalog action as a decision saw it: its numbers, or why it was not returned."""

    action_id: str
    title: str
    log_odds: float
    propensity: float
    value: float
    score: float  # the arbitration priority; 0 for an action a policy filtered out
    rank: int  # 1 = best returned; 0 = not returned
    reason: str  # "" when returned; else the policy that filtered it, or its place in the ranking
    context_weight: float = 1.0
    lever: float = 1.0
    filtered_by: str = ""  # the policy kind that filtered it (eligibility, contact, ...), or ""
    policy: str = ""  # where in the catalog: "suitability[0]", "suppress", "contact[1]", ...
    reads_json: str = ""  # the values the filtering policy read, as JSON ("" when none)


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    action_id: str
    outcome: Outcome
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """A NextBestAction request as received."""

    customer_id: str
    context: str
    channel: Channel
    top_n: int
    as_of: datetime | None


@dataclass(frozen=True, slots=True)
class Arithmetic:
    """The number formats a decision was computed in; a replay must compute in the same ones.

    The defaults describe records written before the arithmetic was recorded: their models
    scored in float64, and the context encoder's format was not kept.
    """

    scoring: str = "float64"  # the propensity model and its SHAP game: "float32" | "float64"
    # The current message's embedding: "float32" | "bfloat16"; "" = no message (or not kept).
    context_encoder: str = ""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """Everything needed to check a decision; written with its answer, read by auditors."""

    recommendation_id: str
    request: DecisionRequest
    decided_at: datetime
    as_of: datetime  # what the decision knew: memories recorded up to then
    actions: tuple[RecommendedAction, ...]
    considered: tuple[ConsideredAction, ...]
    model_version: str
    model_sha256: str
    trace_id: str
    outcomes: tuple[RecordedOutcome, ...] = ()
    catalog_version: str = ""  # the tenant catalog's version the policies came from
    arithmetic: Arithmetic = Arithmetic()

    @property
    def cited_memory_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for action in self.actions:
            for m in action.explanation.memories:
                seen.setdefault(m.memory_id)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class DecisionPage:
    records: tuple[DecisionRecord, ...]
    next_page_token: str
