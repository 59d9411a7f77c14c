"""PostgreSQL with pgvector: the system of record for memories.

Memories are append-only versions of interactions: re-ingesting an ``interaction_id`` with the
same content is a duplicate; with changed content it becomes a new version, and reads pick the
newest version recorded by ``as_of``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from memcrm.core.errors import InvalidArgument, StoreUnavailable
from memcrm.core.types import (
    Channel,
    Direction,
    Enrichment,
    Entity,
    Interaction,
    Label,
    Memory,
    RecalledMemory,
    ScoreParts,
    TimelinePage,
    TraceRef,
)

_COLUMNS = (
    "memory_id, interaction_id, version, customer_id, channel, direction, occurred_at,"
    " recorded_at, text, subject, actor_id, thread_id, attributes, enrichment, trace_id, span_id"
)


@dataclass(frozen=True)
class NewMemory:
    """An interaction ready to be stored, with what ingestion computed for it."""

    interaction: Interaction
    content_sha256: bytes
    embedding: NDArray[np.float32]
    enrichment: Enrichment
    trace: TraceRef


@dataclass(frozen=True)
class Stored:
    interaction_id: str
    memory_id: str
    version: int
    duplicate: bool
    content_sha256: bytes
    enrichment: Enrichment


class MemoryStore:
    def __init__(self, database_url: str, *, max_size: int = 8) -> None:
        self._pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            configure=_configure,
            open=False,
            name="memcrm",
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL unreachable: {exc}") from None

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc.__class__.__name__}") from None

    def ingest(self, tenant_id: str, items: Sequence[NewMemory]) -> list[Stored]:
        """Store every item in one transaction (all or nothing); answers in input order."""
        results: list[Stored] = []
        with self._conn() as conn, conn.transaction():
            for item in items:
                results.append(self._ingest_one(conn, tenant_id, item))
        return results

    def _ingest_one(
        self, conn: psycopg.Connection[dict[str, Any]], tenant_id: str, item: NewMemory
    ) -> Stored:
        it = item.interaction
        # Serialises concurrent ingestion of the same interaction_id until commit.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"{len(tenant_id)}:{tenant_id}:{it.interaction_id}",),
        )
        latest = conn.execute(
            "SELECT memory_id, version, content_sha256, enrichment FROM memories"
            " WHERE tenant_id = %s AND interaction_id = %s ORDER BY version DESC LIMIT 1",
            (tenant_id, it.interaction_id),
        ).fetchone()
        if latest is not None and bytes(latest["content_sha256"]) == item.content_sha256:
            return Stored(
                it.interaction_id,
                str(latest["memory_id"]),
                int(latest["version"]),
                True,
                item.content_sha256,
                enrichment_from_json(latest["enrichment"]),
            )
        version = 1 if latest is None else int(latest["version"]) + 1
        memory_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO memories (tenant_id, memory_id, interaction_id, version, customer_id,"
            " channel, direction, occurred_at, text, subject, actor_id, thread_id, attributes,"
            " content_sha256, enrichment, embedding, trace_id, span_id) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                tenant_id,
                memory_id,
                it.interaction_id,
                version,
                it.customer_id,
                int(it.channel),
                int(it.direction),
                it.occurred_at,
                it.text,
                it.subject,
                it.actor_id,
                it.thread_id,
                Jsonb(dict(it.attributes)),
                item.content_sha256,
                Jsonb(enrichment_to_json(item.enrichment)),
                item.embedding,
                item.trace.trace_id,
                item.trace.span_id,
            ),
        )
        return Stored(
            it.interaction_id, str(memory_id), version, False, item.content_sha256, item.enrichment
        )

    def recall(
        self,
        tenant_id: str,
        customer_id: str,
        query: NDArray[np.float32] | None,
        *,
        top_k: int,
        as_of: datetime,
        channels: Sequence[Channel] = (),
    ) -> list[RecalledMemory]:
        """The customer's memories by cosine similarity to ``query``; by recency without one.

        Exact search over one customer's memories: their count is small, so a sequential scan
        of the customer's rows is both exact and fast.
        """
        channel_filter = "AND channel = ANY(%(channels)s)" if channels else ""
        order = "embedding <=> %(query)s" if query is not None else "occurred_at DESC, memory_id"
        semantic = "1 - (embedding <=> %(query)s)" if query is not None else "0.0"
        sql = (
            f"WITH visible AS (SELECT DISTINCT ON (interaction_id) * FROM memories"
            f" WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s"
            f" AND recorded_at <= %(as_of)s ORDER BY interaction_id, version DESC)"
            f" SELECT {_COLUMNS}, embedding, {semantic} AS semantic FROM visible"
            f" WHERE TRUE {channel_filter} ORDER BY {order} LIMIT %(top_k)s"
        )
        params = {
            "tenant": tenant_id,
            "customer": customer_id,
            "as_of": as_of,
            "query": query,
            "top_k": top_k,
            "channels": [int(c) for c in channels],
        }
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        recalled = []
        for row in rows:
            memory = _memory(row)
            semantic_score = float(row["semantic"])
            recency = _recency(memory.interaction.occurred_at, as_of)
            parts = ScoreParts(semantic=semantic_score, recency=recency)
            score = semantic_score if query is not None else recency
            embedding = np.asarray(row["embedding"].to_numpy(), dtype=np.float32)
            recalled.append(RecalledMemory(memory, score, parts, embedding))
        return recalled

    def timeline(
        self,
        tenant_id: str,
        customer_id: str,
        *,
        page_size: int,
        page_token: str,
        as_of: datetime,
    ) -> TimelinePage:
        """Oldest first, keyset-paged; the token pins ``as_of`` so pages stay consistent."""
        after: tuple[datetime, str] | None = None
        if page_token:
            as_of, after = _decode_token(page_token, customer_id)
        sql = (
            "WITH visible AS (SELECT DISTINCT ON (interaction_id) * FROM memories"
            " WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s"
            " AND recorded_at <= %(as_of)s ORDER BY interaction_id, version DESC)"
            f" SELECT {_COLUMNS} FROM visible"
            " WHERE %(after_at)s::timestamptz IS NULL"
            " OR (occurred_at, memory_id) > (%(after_at)s, %(after_id)s::uuid)"
            " ORDER BY occurred_at, memory_id LIMIT %(limit)s"
        )
        params = {
            "tenant": tenant_id,
            "customer": customer_id,
            "as_of": as_of,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": page_size + 1,
        }
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        memories = [_memory(row) for row in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = memories[-1]
            token = _encode_token(customer_id, as_of, last.interaction.occurred_at, last.memory_id)
        return TimelinePage(memories, token)

    def count(self, tenant_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM memories WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return int(row["n"]) if row else 0


def _configure(conn: psycopg.Connection[Any]) -> None:
    register_vector(conn)
    conn.row_factory = dict_row
    conn.commit()


def _recency(occurred_at: datetime, as_of: datetime, half_life_days: float = 30.0) -> float:
    age_days = max((as_of - occurred_at).total_seconds() / 86400.0, 0.0)
    return float(0.5 ** (age_days / half_life_days))


def enrichment_to_json(e: Enrichment) -> dict[str, Any]:
    def label(x: Label | None) -> dict[str, Any] | None:
        return None if x is None else {"name": x.name, "confidence": x.confidence}

    def entity(x: Entity) -> dict[str, Any]:
        return {"text": x.text, "type": x.type, "start": x.start, "end": x.end}

    return {
        "model_version": e.model_version,
        "sentiment": label(e.sentiment),
        "sentiment_score": e.sentiment_score,
        "intents": [label(x) for x in e.intents],
        "issue": label(e.issue),
        "entities": [entity(x) for x in e.entities],
        "objections": [label(x) for x in e.objections],
        "topics": list(e.topics),
        "importance": e.importance,
        "redactions": [entity(x) for x in e.redactions],
    }


def enrichment_from_json(data: dict[str, Any]) -> Enrichment:
    def label(x: dict[str, Any] | None) -> Label | None:
        return None if x is None else Label(str(x["name"]), float(x["confidence"]))

    def labels(xs: list[dict[str, Any]] | None) -> tuple[Label, ...]:
        return tuple(Label(str(x["name"]), float(x["confidence"])) for x in xs or [])

    def entities(xs: list[dict[str, Any]] | None) -> tuple[Entity, ...]:
        return tuple(
            Entity(str(x["text"]), str(x["type"]), int(x["start"]), int(x["end"])) for x in xs or []
        )

    return Enrichment(
        model_version=str(data.get("model_version", "")),
        sentiment=label(data.get("sentiment")),
        sentiment_score=float(data.get("sentiment_score", 0.0)),
        intents=labels(data.get("intents")),
        issue=label(data.get("issue")),
        entities=entities(data.get("entities")),
        objections=labels(data.get("objections")),
        topics=tuple(str(t) for t in data.get("topics") or []),
        importance=float(data.get("importance", 0.0)),
        redactions=entities(data.get("redactions")),
    )


def _memory(row: dict[str, Any]) -> Memory:
    interaction = Interaction(
        interaction_id=row["interaction_id"],
        customer_id=row["customer_id"],
        channel=Channel(row["channel"]),
        direction=Direction(row["direction"]),
        occurred_at=row["occurred_at"],
        text=row["text"],
        subject=row["subject"],
        actor_id=row["actor_id"],
        thread_id=row["thread_id"],
        attributes=dict(row["attributes"]),
    )
    return Memory(
        memory_id=str(row["memory_id"]),
        interaction=interaction,
        enrichment=enrichment_from_json(row["enrichment"]),
        recorded_at=row["recorded_at"],
        ingest_trace=TraceRef(row["trace_id"], row["span_id"]),
        version=int(row["version"]),
    )


def _encode_token(customer_id: str, as_of: datetime, at: datetime, memory_id: str) -> str:
    doc = {"c": customer_id, "as_of": as_of.isoformat(), "at": at.isoformat(), "id": memory_id}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def _decode_token(token: str, customer_id: str) -> tuple[datetime, tuple[datetime, str]]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        if doc["c"] != customer_id:
            raise InvalidArgument("page_token", "belongs to another customer")
        uuid.UUID(doc["id"])
        as_of = datetime.fromisoformat(doc["as_of"])
        return as_of, (datetime.fromisoformat(doc["at"]), doc["id"])
    except InvalidArgument:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument("page_token", "is not a token this server issued") from None
