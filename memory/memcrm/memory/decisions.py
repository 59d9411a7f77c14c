"""Decision records and outcomes in PostgreSQL: the audit trail and the feedback loop's data.

A record is written in one INSERT (all or nothing) before the answer leaves the service, so
every recommendation a client ever saw has its record. Records are never updated; outcomes are
appended beside them and joined in when a record is read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from memcrm.core.errors import InvalidArgument, NotFound
from memcrm.core.types import (
    Arithmetic,
    Channel,
    ConsideredAction,
    DecisionPage,
    DecisionRecord,
    DecisionRequest,
    Explanation,
    FeatureAttribution,
    MemoryAttribution,
    Outcome,
    RecommendedAction,
    RecordedOutcome,
    TraceRef,
)
from memcrm.core.validation import check_id
from memcrm.memory.paging import PagePosition, decode_token, encode_token
from memcrm.memory.store import MemoryStore

# Schema 2 cites each memory once, under "cited" (its interaction, ingestion trace, snippet and
# time), and each action's explanation keeps only [memory_id, shap_value] pairs, in order. Schema 1
# repeated every citation in every returned action: a decision over 32 memories with 3 actions
# stored ~42 KB of JSON, half of it copies. Both are read. "arithmetic" (the formats the decision
# was computed in) was added to schema 2 later; a record without it was scored in float64.
RECORD_SCHEMA = 2


class DecisionStore:
    """Reads and writes decision records through a ``MemoryStore``'s connection pool."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def save(self, tenant_id: str, record: DecisionRecord) -> None:
        with self._store.connection() as conn:
            conn.execute(
                "INSERT INTO decisions (tenant_id, recommendation_id, customer_id, decided_at,"
                " as_of, model_version, model_sha256, trace_id, cited_memory_ids, record)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    tenant_id,
                    uuid.UUID(record.recommendation_id),
                    record.request.customer_id,
                    record.decided_at,
                    record.as_of,
                    record.model_version,
                    record.model_sha256,
                    record.trace_id,
                    [uuid.UUID(m) for m in record.cited_memory_ids],
                    Jsonb(record_to_json(record)),
                ),
            )

    def get(self, tenant_id: str, recommendation_id: str) -> DecisionRecord:
        key = _recommendation_id(recommendation_id)
        with self._store.connection() as conn:
            row = conn.execute(
                "SELECT record FROM decisions WHERE tenant_id = %s AND recommendation_id = %s",
                (tenant_id, key),
            ).fetchone()
            if row is None:
                raise NotFound("recommendation", recommendation_id)
            outcomes = self._outcomes(conn, tenant_id, [key])
        return _with_outcomes(record_from_json(row["record"]), outcomes.get(str(key), ()))

    def for_customer(
        self,
        tenant_id: str,
        customer_id: str,
        *,
        since: datetime | None,
        until: datetime | None,
        page_size: int,
        page_token: str,
    ) -> DecisionPage:
        """Newest first, keyset-paged on (decided_at, recommendation_id)."""
        check_id("customer_id", customer_id)
        after = decode_token(page_token, customer_id) if page_token else None
        with self._store.connection() as conn:
            rows = conn.execute(
                "SELECT recommendation_id, decided_at, record FROM decisions"
                " WHERE tenant_id = %(t)s AND customer_id = %(c)s"
                " AND (%(since)s::timestamptz IS NULL OR decided_at >= %(since)s)"
                " AND (%(until)s::timestamptz IS NULL OR decided_at < %(until)s)"
                " AND (%(at)s::timestamptz IS NULL"
                " OR (decided_at, recommendation_id) < (%(at)s, %(id)s::uuid))"
                " ORDER BY decided_at DESC, recommendation_id DESC LIMIT %(n)s",
                {
                    "t": tenant_id,
                    "c": customer_id,
                    "since": since,
                    "until": until,
                    "at": after.at if after else None,
                    "id": after.row_id if after else None,
                    "n": page_size + 1,
                },
            ).fetchall()
            page = rows[:page_size]
            outcomes = self._outcomes(conn, tenant_id, [r["recommendation_id"] for r in page])
        records = tuple(
            _with_outcomes(
                record_from_json(r["record"]), outcomes.get(str(r["recommendation_id"]), ())
            )
            for r in page
        )
        token = ""
        if len(rows) > page_size:
            last = page[-1]
            token = encode_token(
                PagePosition(customer_id, last["decided_at"], str(last["recommendation_id"]))
            )
        return DecisionPage(records, token)

    def record_outcome(
        self,
        tenant_id: str,
        recommendation_id: str,
        action_id: str,
        outcome: Outcome,
        occurred_at: datetime,
    ) -> RecordedOutcome:
        """Append an outcome for one of the actions the decision considered."""
        key = _recommendation_id(recommendation_id)
        if outcome is Outcome.UNSPECIFIED:
            raise InvalidArgument("outcome", "is required")
        with self._store.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT record, decided_at FROM decisions"
                " WHERE tenant_id = %s AND recommendation_id = %s",
                (tenant_id, key),
            ).fetchone()
            if row is None:
                raise NotFound("recommendation", recommendation_id)
            considered = {a["action_id"] for a in row["record"]["considered"]}
            if action_id not in considered:
                raise InvalidArgument("action_id", "is not an action this decision considered")
            if occurred_at < row["decided_at"]:
                raise InvalidArgument("occurred_at", "is before the decision was made")
            saved = conn.execute(
                "INSERT INTO outcomes (tenant_id, outcome_id, recommendation_id, action_id,"
                " outcome, occurred_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING recorded_at",
                (tenant_id, uuid.uuid4(), key, action_id, int(outcome), occurred_at),
            ).fetchone()
        assert saved is not None
        return RecordedOutcome(action_id, outcome, occurred_at, saved["recorded_at"])

    def outcome_history(
        self, tenant_id: str, customer_id: str, *, as_of: datetime
    ) -> list[OutcomeRow]:
        """Every outcome recorded for the customer's decisions by ``as_of``, oldest first, with
        the channel its decision was asked for (contact policies count them per channel)."""
        with self._store.connection() as conn:
            rows = conn.execute(
                "SELECT o.action_id, o.outcome, o.occurred_at,"
                " (d.record -> 'request' ->> 'channel')::int AS channel"
                " FROM outcomes o JOIN decisions d"
                " ON d.tenant_id = o.tenant_id AND d.recommendation_id = o.recommendation_id"
                " WHERE d.tenant_id = %s AND d.customer_id = %s AND o.recorded_at <= %s"
                " ORDER BY o.occurred_at, o.recorded_at, o.outcome_id",
                (tenant_id, customer_id, as_of),
            ).fetchall()
        return [
            OutcomeRow(
                r["action_id"], Channel(r["channel"]), Outcome(r["outcome"]), r["occurred_at"]
            )
            for r in rows
        ]

    @staticmethod
    def _outcomes(
        conn: Any, tenant_id: str, keys: list[uuid.UUID]
    ) -> dict[str, tuple[RecordedOutcome, ...]]:
        if not keys:
            return {}
        rows = conn.execute(
            "SELECT recommendation_id, action_id, outcome, occurred_at, recorded_at FROM outcomes"
            " WHERE tenant_id = %s AND recommendation_id = ANY(%s)"
            " ORDER BY occurred_at, recorded_at, outcome_id",
            (tenant_id, keys),
        ).fetchall()
        found: dict[str, list[RecordedOutcome]] = {}
        for r in rows:
            found.setdefault(str(r["recommendation_id"]), []).append(
                RecordedOutcome(
                    r["action_id"], Outcome(r["outcome"]), r["occurred_at"], r["recorded_at"]
                )
            )
        return {k: tuple(v) for k, v in found.items()}


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """An outcome of one of a customer's decisions, and the channel the decision was for."""

    action_id: str
    channel: Channel
    outcome: Outcome
    occurred_at: datetime


def _with_outcomes(record: DecisionRecord, outcomes: tuple[RecordedOutcome, ...]) -> DecisionRecord:
    return replace(record, outcomes=outcomes)


def _recommendation_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("recommendation_id", "is not a recommendation id") from None


# JSON codec ------------------------------------------------------------------------------


def record_to_json(r: DecisionRecord) -> dict[str, Any]:
    req = r.request
    cited: dict[str, MemoryAttribution] = {}
    for action in r.actions:
        for m in action.explanation.memories:
            cited.setdefault(m.memory_id, m)
    return {
        "schema": RECORD_SCHEMA,
        "recommendation_id": r.recommendation_id,
        "request": {
            "customer_id": req.customer_id,
            "context": req.context,
            "channel": int(req.channel),
            "top_n": req.top_n,
            "as_of": req.as_of.isoformat() if req.as_of else None,
        },
        "decided_at": r.decided_at.isoformat(),
        "as_of": r.as_of.isoformat(),
        "cited": [
            {
                "memory_id": m.memory_id,
                "interaction_id": m.interaction_id,
                "trace_id": m.ingest_trace.trace_id,
                "span_id": m.ingest_trace.span_id,
                "snippet": m.snippet,
                "occurred_at": m.occurred_at.isoformat(),
            }
            for m in cited.values()
        ],
        "actions": [_action_to_json(a) for a in r.actions],
        "considered": [
            {
                "action_id": c.action_id,
                "title": c.title,
                "log_odds": c.log_odds,
                "propensity": c.propensity,
                "value": c.value,
                "score": c.score,
                "rank": c.rank,
                "reason": c.reason,
                "context_weight": c.context_weight,
                "lever": c.lever,
                "filtered_by": c.filtered_by,
                "policy": c.policy,
                "reads_json": c.reads_json,
            }
            for c in r.considered
        ],
        "model_version": r.model_version,
        "model_sha256": r.model_sha256,
        "trace_id": r.trace_id,
        "catalog_version": r.catalog_version,
        "arithmetic": {
            "scoring": r.arithmetic.scoring,
            "context_encoder": r.arithmetic.context_encoder,
        },
    }


def record_from_json(d: dict[str, Any]) -> DecisionRecord:
    req = d["request"]
    if int(d.get("schema", 1)) == 1:
        actions = tuple(
            _action_from_json(a, explanation_from_json(a["explanation"])) for a in d["actions"]
        )
    else:
        cited = {c["memory_id"]: c for c in d["cited"]}
        actions = tuple(
            _action_from_json(a, _explanation_from_record(a["explanation"], cited))
            for a in d["actions"]
        )
    return DecisionRecord(
        recommendation_id=d["recommendation_id"],
        request=DecisionRequest(
            customer_id=req["customer_id"],
            context=req["context"],
            channel=Channel(req["channel"]),
            top_n=int(req["top_n"]),
            as_of=datetime.fromisoformat(req["as_of"]) if req["as_of"] else None,
        ),
        decided_at=datetime.fromisoformat(d["decided_at"]),
        as_of=datetime.fromisoformat(d["as_of"]),
        actions=actions,
        considered=tuple(ConsideredAction(**c) for c in d["considered"]),
        model_version=d["model_version"],
        model_sha256=d["model_sha256"],
        trace_id=d["trace_id"],
        catalog_version=d.get("catalog_version", ""),
        # Absent from records written before it was kept: their defaults say what those were.
        arithmetic=Arithmetic(**d["arithmetic"]) if "arithmetic" in d else Arithmetic(),
    )


def _action_to_json(a: RecommendedAction) -> dict[str, Any]:
    return {
        "action_id": a.action_id,
        "title": a.title,
        "rank": a.rank,
        "score": a.score,
        "propensity": a.propensity,
        "value": a.value,
        "explanation": {
            **_explanation_fields(a.explanation),
            "memories": [[m.memory_id, m.shap_value] for m in a.explanation.memories],
        },
    }


def explanation_to_json(e: Explanation) -> dict[str, Any]:
    """An explanation as signal events (and schema-1 decision records) store it."""
    return {
        **_explanation_fields(e),
        "memories": [
            {
                "memory_id": m.memory_id,
                "interaction_id": m.interaction_id,
                "shap_value": m.shap_value,
                "trace_id": m.ingest_trace.trace_id,
                "span_id": m.ingest_trace.span_id,
                "snippet": m.snippet,
                "occurred_at": m.occurred_at.isoformat(),
            }
            for m in e.memories
        ],
    }


def _explanation_fields(e: Explanation) -> dict[str, Any]:
    """Everything of an explanation but its memory attributions."""
    return {
        "explainer": e.explainer,
        "base_value": e.base_value,
        "output_value": e.output_value,
        "output_name": e.output_name,
        "summary": e.summary,
        "features": [
            {"feature": f.feature, "value": f.value, "shap_value": f.shap_value} for f in e.features
        ],
    }


def _action_from_json(a: dict[str, Any], explanation: Explanation) -> RecommendedAction:
    return RecommendedAction(
        action_id=a["action_id"],
        title=a["title"],
        rank=int(a["rank"]),
        score=float(a["score"]),
        propensity=float(a["propensity"]),
        value=float(a["value"]),
        explanation=explanation,
    )


def explanation_from_json(e: dict[str, Any]) -> Explanation:
    return _explanation(e, [_attribution(m, float(m["shap_value"])) for m in e["memories"]])


def _explanation_from_record(e: dict[str, Any], cited: dict[str, dict[str, Any]]) -> Explanation:
    """A schema-2 record's explanation: its [memory_id, shap_value] pairs, cited in ``cited``."""
    return _explanation(e, [_attribution(cited[m], float(value)) for m, value in e["memories"]])


def _explanation(e: dict[str, Any], memories: list[MemoryAttribution]) -> Explanation:
    return Explanation(
        explainer=e["explainer"],
        base_value=float(e["base_value"]),
        output_value=float(e["output_value"]),
        output_name=e["output_name"],
        features=[FeatureAttribution(**f) for f in e["features"]],
        memories=memories,
        summary=e["summary"],
    )


def _attribution(m: dict[str, Any], shap_value: float) -> MemoryAttribution:
    return MemoryAttribution(
        memory_id=m["memory_id"],
        interaction_id=m["interaction_id"],
        shap_value=shap_value,
        ingest_trace=TraceRef(m["trace_id"], m["span_id"]),
        snippet=m["snippet"],
        occurred_at=datetime.fromisoformat(m["occurred_at"]),
    )
