"""PostgreSQL with pgvector: the system of record for memories.

Memories are append-only versions of interactions: re-ingesting an ``interaction_id`` with the
same content is a duplicate; with changed content it becomes a new version, and reads pick the
newest version recorded by ``as_of``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
    SearchFilter,
    TimelinePage,
    TraceRef,
)
from memcrm.memory.paging import PagePosition, decode_token, encode_token
from memcrm.memory.ranking import (
    SEARCH_SETTINGS,
    VISIBLE,
    RecallWeights,
    recall_sql,
    search_sql,
    weight_params,
)

_COLUMNS = (
    "memory_id, interaction_id, version, customer_id, channel, direction, occurred_at,"
    " recorded_at, text, subject, actor_id, thread_id, attributes, enrichment, trace_id, span_id,"
    " near_duplicate_of"
)

_M_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _COLUMNS.split(","))

# Cosine similarity from which two interactions of one customer count as the same thing said
# twice (e.g. a complaint by email, then as a ticket). all-MiniLM-L6-v2 paraphrases of one
# complaint score about 0.85-0.95; different complaints of one customer rarely exceed 0.8.
NEAR_DUPLICATE_THRESHOLD = 0.9


@dataclass(frozen=True)
class NewMemory:
    """An interaction ready to be stored, with what ingestion computed for it."""

    interaction: Interaction
    content_sha256: bytes
    embedding: NDArray[np.float32]
    enrichment: Enrichment
    trace: TraceRef


@dataclass(frozen=True)
class _Latest:
    """The newest version of an interaction, as ingestion needs it."""

    memory_id: str
    version: int
    content_sha256: bytes
    enrichment: Enrichment


@dataclass(frozen=True)
class Stored:
    interaction_id: str
    memory_id: str
    version: int
    duplicate: bool
    content_sha256: bytes
    enrichment: Enrichment
    # For a new version: when it was recorded and its near-duplicate cluster, if any.
    recorded_at: datetime | None = None
    near_duplicate_of: str = ""


class MemoryStore:
    def __init__(
        self,
        database_url: str,
        *,
        max_size: int = 8,
        weights: RecallWeights | None = None,
        near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    ) -> None:
        self.weights = weights or RecallWeights()
        self.near_duplicate_threshold = near_duplicate_threshold
        # Autocommit: a read is one round trip. Without it every block is a transaction: BEGIN,
        # the query, and the COMMIT the pool sends when the block ends. Statements that must land
        # together run inside ``conn.transaction()``; a single statement is atomic on its own.
        self._pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
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

    def connection(self) -> AbstractContextManager[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection (dict rows, pgvector registered) for other stores over the same
        database, with the same mapping of connection failures to ``StoreUnavailable``."""
        return self._conn()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc.__class__.__name__}") from None

    def ingest(self, tenant_id: str, items: Sequence[NewMemory]) -> list[Stored]:
        """Store every item in one transaction (all or nothing); answers in input order.

        A constant number of statements per call, whatever its size: the interactions'
        advisory locks (taken in one global order, so concurrent batches cannot deadlock),
        their latest versions, the near-duplicate candidates, the inserts and the supersessions.
        Items are still decided one after another, as if stored one at a time: a repeat of an
        interaction inside the batch sees the version stored before it.
        """
        if not items:
            return []
        with self._conn() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM"
                " (SELECT DISTINCT hashtextextended(x, 0) AS k FROM unnest(%s::text[]) AS x"
                "  ORDER BY k) AS keys",
                ([f"{len(tenant_id)}:{tenant_id}:{i.interaction.interaction_id}" for i in items],),
            )
            latest: dict[str, _Latest] = {
                str(row["interaction_id"]): _Latest(
                    str(row["memory_id"]),
                    int(row["version"]),
                    bytes(row["content_sha256"]),
                    enrichment_from_json(row["enrichment"]),
                )
                for row in conn.execute(
                    "SELECT DISTINCT ON (interaction_id) interaction_id, memory_id, version,"
                    " content_sha256, enrichment FROM memories"
                    " WHERE tenant_id = %s AND interaction_id = ANY(%s)"
                    " ORDER BY interaction_id, version DESC",
                    (tenant_id, sorted({i.interaction.interaction_id for i in items})),
                )
            }
            results: list[Stored] = []
            new: list[tuple[NewMemory, uuid.UUID, int, str | None]] = []  # + superseded id
            for item in items:
                it = item.interaction
                known = latest.get(it.interaction_id)
                if known is not None and known.content_sha256 == item.content_sha256:
                    results.append(
                        Stored(
                            it.interaction_id,
                            known.memory_id,
                            known.version,
                            True,
                            item.content_sha256,
                            known.enrichment,
                        )
                    )
                    continue
                memory_id = uuid.uuid4()
                version = 1 if known is None else known.version + 1
                new.append((item, memory_id, version, known.memory_id if known else None))
                latest[it.interaction_id] = _Latest(
                    str(memory_id), version, item.content_sha256, item.enrichment
                )
                results.append(
                    Stored(it.interaction_id, str(memory_id), version, False, b"", item.enrichment)
                )
            clusters = self._near_duplicates(conn, tenant_id, new)
            recorded = self._insert(conn, tenant_id, new, clusters)
        by_id = {str(m): (r, c) for (_, m, _, _), r, c in zip(new, recorded, clusters, strict=True)}
        out: list[Stored] = []
        for item, result in zip(items, results, strict=True):
            if result.duplicate:
                out.append(result)
                continue
            recorded_at, (cluster, _) = by_id[result.memory_id]
            out.append(
                Stored(
                    result.interaction_id,
                    result.memory_id,
                    result.version,
                    False,
                    item.content_sha256,
                    item.enrichment,
                    recorded_at=recorded_at,
                    near_duplicate_of=str(cluster) if cluster is not None else "",
                )
            )
        return out

    def _insert(
        self,
        conn: psycopg.Connection[dict[str, Any]],
        tenant_id: str,
        new: Sequence[tuple[NewMemory, uuid.UUID, int, str | None]],
        clusters: Sequence[tuple[uuid.UUID | None, float | None]],
    ) -> list[datetime]:
        """Insert the new versions (one pipelined statement), then mark the versions they
        replace as superseded at the new one's ``recorded_at``; returns the ``recorded_at``s."""
        if not new:
            return []
        rows = [
            (
                tenant_id,
                memory_id,
                item.interaction.interaction_id,
                version,
                item.interaction.customer_id,
                int(item.interaction.channel),
                int(item.interaction.direction),
                item.interaction.occurred_at,
                item.interaction.text,
                item.interaction.subject,
                item.interaction.actor_id,
                item.interaction.thread_id,
                Jsonb(dict(item.interaction.attributes)),
                item.content_sha256,
                Jsonb(enrichment_to_json(item.enrichment)),
                item.embedding,
                item.trace.trace_id,
                item.trace.span_id,
                cluster,
                similarity,
            )
            for (item, memory_id, version, _), (cluster, similarity) in zip(
                new, clusters, strict=True
            )
        ]
        recorded: list[datetime] = []
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO memories (tenant_id, memory_id, interaction_id, version, customer_id,"
                " channel, direction, occurred_at, text, subject, actor_id, thread_id, attributes,"
                " content_sha256, enrichment, embedding, trace_id, span_id, near_duplicate_of,"
                " near_duplicate_similarity) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING recorded_at",
                rows,
                returning=True,
            )
            while True:
                row = cur.fetchone()
                if row is None:
                    raise StoreUnavailable("PostgreSQL returned no recorded_at for an insert")
                recorded.append(row["recorded_at"])
                if not cur.nextset():
                    break
            supersessions = [
                (at, tenant_id, uuid.UUID(previous))
                for (_, _, _, previous), at in zip(new, recorded, strict=True)
                if previous is not None
            ]
            if supersessions:
                # The previous version stays visible to as_of queries before this moment.
                cur.executemany(
                    "UPDATE memories SET superseded_at = %s"
                    " WHERE tenant_id = %s AND memory_id = %s AND superseded_at IS NULL",
                    supersessions,
                )
        return recorded

    def _near_duplicates(
        self,
        conn: psycopg.Connection[dict[str, Any]],
        tenant_id: str,
        new: Sequence[tuple[NewMemory, uuid.UUID, int, str | None]],
    ) -> list[tuple[uuid.UUID | None, float | None]]:
        """For each new version: the cluster of the customer's most similar current memory of
        another interaction in the same direction from the same actor, when it is at least
        ``near_duplicate_threshold`` similar, on any channel; else (None, None).

        Candidates are the memories stored before this call (one statement, exact over each
        customer's memories) and the new versions before it in ``new``, which count as
        stored already, exactly as if the batch were stored one item at a time.
        """
        if not new:
            return []
        its = [item.interaction for item, _, _, _ in new]
        stored = {
            int(row["ord"]): row
            for row in conn.execute(
                # Ordering by an expression (not the bare distance) keeps the tenant-wide HNSW
                # index, which would filter after an approximate search, out of it.
                "SELECT q.ord, best.memory_id, best.cluster, best.similarity"
                " FROM unnest(%(ord)s::int[], %(customer)s::text[], %(direction)s::smallint[],"
                " %(actor)s::text[], %(interaction)s::text[], %(embedding)s::vector[])"
                " AS q(ord, customer, direction, actor, interaction, embedding)"
                " CROSS JOIN LATERAL (SELECT m.memory_id,"
                " coalesce(m.near_duplicate_of, m.memory_id) AS cluster,"
                " 1 - (m.embedding <=> q.embedding) AS similarity FROM memories m"
                " WHERE m.tenant_id = %(tenant)s AND m.customer_id = q.customer"
                " AND m.direction = q.direction AND m.actor_id = q.actor"
                " AND m.superseded_at IS NULL AND m.interaction_id <> q.interaction"
                " ORDER BY 1 - (m.embedding <=> q.embedding) DESC LIMIT 1) AS best",
                {
                    "ord": list(range(len(new))),
                    "customer": [it.customer_id for it in its],
                    "direction": [int(it.direction) for it in its],
                    "actor": [it.actor_id for it in its],
                    "interaction": [it.interaction_id for it in its],
                    "embedding": [item.embedding for item, _, _, _ in new],
                    "tenant": tenant_id,
                },
            )
        }
        superseded = {uuid.UUID(prev) for _, _, _, prev in new if prev is not None}
        threshold = self.near_duplicate_threshold
        out: list[tuple[uuid.UUID | None, float | None]] = []
        current: dict[str, int] = {}  # interaction id -> its newest version's index in ``new``
        for i, (item, _, _, _) in enumerate(new):
            it = item.interaction
            best: tuple[uuid.UUID | None, float] = (None, -1.0)
            row = stored.get(i)
            if row is not None:
                if row["memory_id"] in superseded:
                    # Its best stored match was replaced earlier in this batch: ask again,
                    # now that the replacement is visible.
                    best = self._near_duplicate_one(conn, tenant_id, item, superseded)
                else:
                    best = (row["cluster"], float(row["similarity"]))
            for j in current.values():
                other, other_id, _, _ = new[j]
                o = other.interaction
                if (
                    o.interaction_id == it.interaction_id
                    or o.customer_id != it.customer_id
                    or o.direction != it.direction
                    or o.actor_id != it.actor_id
                ):
                    continue
                similarity = float(np.dot(item.embedding, other.embedding))
                if similarity > best[1]:
                    best = (out[j][0] or other_id, similarity)
            out.append(best if best[0] is not None and best[1] >= threshold else (None, None))
            current[it.interaction_id] = i
        return out

    def _near_duplicate_one(
        self,
        conn: psycopg.Connection[dict[str, Any]],
        tenant_id: str,
        item: NewMemory,
        excluded: set[uuid.UUID],
    ) -> tuple[uuid.UUID | None, float]:
        """``_near_duplicates`` for one item, leaving out memories superseded meanwhile."""
        it = item.interaction
        row = conn.execute(
            "SELECT coalesce(near_duplicate_of, memory_id) AS cluster,"
            " 1 - (embedding <=> %(e)s) AS similarity FROM memories"
            " WHERE tenant_id = %(t)s AND customer_id = %(c)s AND direction = %(d)s"
            " AND actor_id = %(a)s AND superseded_at IS NULL AND interaction_id <> %(i)s"
            " AND memory_id <> ALL(%(x)s) ORDER BY 1 - (embedding <=> %(e)s) DESC LIMIT 1",
            {
                "e": item.embedding,
                "t": tenant_id,
                "c": it.customer_id,
                "d": int(it.direction),
                "a": it.actor_id,
                "i": it.interaction_id,
                "x": sorted(excluded),
            },
        ).fetchone()
        if row is None:
            return None, -1.0
        return row["cluster"], float(row["similarity"])

    def recall(
        self,
        tenant_id: str,
        customer_id: str,
        query: NDArray[np.float32] | None,
        *,
        top_k: int,
        as_of: datetime,
        channels: Sequence[Channel] = (),
        query_text: str = "",
        weights: RecallWeights | None = None,
    ) -> list[RecalledMemory]:
        """The customer's memories ranked by hybrid relevance (``memory.ranking``); without a
        query embedding, the most important recent ones."""
        sql = recall_sql(_M_COLUMNS, with_query=query is not None, channel_filter=bool(channels))
        params: dict[str, object] = {
            "tenant": tenant_id,
            "customer": customer_id,
            "as_of": as_of,
            "query": query,
            "query_text": query_text,
            "top_k": top_k,
            "channels": [int(c) for c in channels],
            **weight_params(weights or self.weights),
        }
        with self._conn() as conn:
            # Binary results: embeddings arrive as packed floats, not text to parse (about
            # 1 ms per recall of ten).
            rows = conn.execute(sql.encode(), params, binary=True).fetchall()
        return [_recalled(row) for row in rows]

    def search(
        self,
        tenant_id: str,
        query: NDArray[np.float32],
        query_text: str,
        *,
        top_k: int,
        bounds: SearchFilter,
        weights: RecallWeights | None = None,
    ) -> list[RecalledMemory]:
        """Tenant-wide hybrid search across customers (``memory.ranking.search_sql``)."""
        sql = search_sql(
            _M_COLUMNS,
            channel_filter=bool(bounds.channels),
            one_per_customer=bounds.one_per_customer,
        )
        params: dict[str, object] = {
            "tenant": tenant_id,
            "as_of": bounds.as_of,
            "after": bounds.occurred_after,
            "before": bounds.occurred_before,
            "channels": [int(c) for c in bounds.channels],
            "query": query,
            "query_text": query_text,
            "candidates": max(4 * top_k, 40),
            "top_k": top_k,
            **weight_params(weights or self.weights),
        }
        with self._conn() as conn, conn.transaction():
            for setting in SEARCH_SETTINGS:
                conn.execute(setting.encode())
            rows = conn.execute(sql.encode(), params, binary=True).fetchall()
        return [_recalled(row) for row in rows]

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
            position = decode_token(page_token, customer_id)
            if position.as_of is None:
                raise InvalidArgument("page_token", "is not a timeline token")
            as_of, after = position.as_of, (position.at, position.row_id)
        sql = (
            f"SELECT {_COLUMNS} FROM memories"
            f" WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s AND {VISIBLE}"
            " AND (%(after_at)s::timestamptz IS NULL"
            " OR (occurred_at, memory_id) > (%(after_at)s, %(after_id)s::uuid))"
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
            token = encode_token(
                PagePosition(customer_id, last.interaction.occurred_at, last.memory_id, as_of)
            )
        return TimelinePage(memories, token)

    def customer_memories(
        self, tenant_id: str, customer_id: str, *, as_of: datetime
    ) -> list[Memory]:
        """Every memory of the customer visible at ``as_of``, oldest first (profiles)."""
        sql = (
            f"SELECT {_COLUMNS} FROM memories"
            f" WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s AND {VISIBLE}"
            " ORDER BY occurred_at, memory_id"
        )
        params = {"tenant": tenant_id, "customer": customer_id, "as_of": as_of}
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        return [_memory(row) for row in rows]

    def memories_with_attributes(
        self, tenant_id: str, customer_id: str, keys: Sequence[str], *, as_of: datetime
    ) -> list[Memory]:
        """The customer's memories visible at ``as_of`` whose attributes hold any of ``keys``
        (consent statements, attributes a catalog's rules read), oldest first."""
        if not keys:
            return []
        sql = (
            f"SELECT {_COLUMNS} FROM memories"
            f" WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s AND {VISIBLE}"
            " AND attributes ?| %(keys)s ORDER BY occurred_at, memory_id"
        )
        params = {"tenant": tenant_id, "customer": customer_id, "as_of": as_of, "keys": list(keys)}
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        return [_memory(row) for row in rows]

    def customers_memories(
        self, tenant_id: str, customer_ids: Sequence[str], *, as_of: datetime
    ) -> dict[str, list[Memory]]:
        """``customer_memories`` for several customers in one query."""
        sql = (
            f"SELECT {_COLUMNS} FROM memories"
            f" WHERE tenant_id = %(tenant)s AND customer_id = ANY(%(customers)s) AND {VISIBLE}"
            " ORDER BY customer_id, occurred_at, memory_id"
        )
        params = {"tenant": tenant_id, "customers": list(customer_ids), "as_of": as_of}
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params).fetchall()
        out: dict[str, list[Memory]] = {}
        for row in rows:
            memory = _memory(row)
            out.setdefault(memory.interaction.customer_id, []).append(memory)
        return out

    def recent_memories(
        self, tenant_id: str, customer_ids: Sequence[str], *, limit: int, as_of: datetime
    ) -> dict[str, list[RecalledMemory]]:
        """Each customer's ``limit`` most recent memories visible at ``as_of`` with their
        embeddings, newest first, in one query (predictions read these). ``score`` and
        ``parts`` are zero: nothing was ranked."""
        sql = (
            f"SELECT {_M_COLUMNS}, m.embedding, 0.0 AS score, 0.0 AS p_semantic,"
            " 0.0 AS p_lexical, 0.0 AS p_recency, 0.0 AS p_importance, 0.0 AS p_context"
            " FROM unnest(%(customers)s::text[]) AS c(customer_id)"
            " CROSS JOIN LATERAL ("
            " SELECT * FROM memories"
            " WHERE tenant_id = %(tenant)s AND customer_id = c.customer_id"
            f" AND {VISIBLE}"
            " ORDER BY occurred_at DESC, memory_id DESC LIMIT %(limit)s) AS m"
        )
        customers = sorted(set(customer_ids))
        params = {"tenant": tenant_id, "customers": customers, "as_of": as_of, "limit": limit}
        with self._conn() as conn:
            rows = conn.execute(sql.encode(), params, binary=True).fetchall()
        out: dict[str, list[RecalledMemory]] = {c: [] for c in customers}
        for row in rows:
            recalled = _recalled(row)
            out[recalled.memory.interaction.customer_id].append(recalled)
        return out

    def count(self, tenant_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM memories WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return int(row["n"]) if row else 0


def _configure(conn: psycopg.Connection[Any]) -> None:
    register_vector(conn)
    conn.row_factory = dict_row


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


def _recalled(row: dict[str, Any]) -> RecalledMemory:
    parts = ScoreParts(
        semantic=float(row["p_semantic"]),
        lexical=float(row["p_lexical"]),
        recency=float(row["p_recency"]),
        importance=float(row["p_importance"]),
        context=float(row["p_context"]),
    )
    embedding = np.asarray(row["embedding"].to_numpy(), dtype=np.float32)
    return RecalledMemory(_memory(row), float(row["score"]), parts, embedding)


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
        near_duplicate_of=str(row["near_duplicate_of"] or ""),
    )
