"""Scale benchmark (not a test): Recall and SearchMemories over 1,000,000 memories.

Bulk-loads ``--customers`` x ``--per-customer`` memories (default 10,000 x 100) into tenant
``demo`` with ``COPY``, then measures in one run, interleaved so that every figure shares the
same machine noise:

- ``Recall`` through gRPC (a random customer, a held-back tweet as the query, top_k 10);
- ``SearchMemories`` through gRPC (tenant-wide, top_k 10; a third of them limited to the last
  7 days of the data, a third with ``one_per_customer``);
- the bare SQL of the same calls: the statements the store runs (``memory.ranking.recall_sql``
  and ``search_sql`` with the store's parameters and settings), with the query embedding
  computed beforehand, timing only ``execute`` + ``fetchall`` on a direct psycopg connection.

It also prints ``EXPLAIN (ANALYZE)`` summaries of one Recall and each kind of search (which
index served which part), and the quality of the approximate tenant-wide search: overlap@10 of
``search_sql`` with the HNSW index against the same statement with index scans disabled
(exact), and the recall of the HNSW candidates alone.

The data: texts sampled (seeded) from the airline tweets (``MEMCRM_DATA_DIR``), each with its
real all-MiniLM-L6-v2 embedding plus small Gaussian noise, re-normalised; conversations
(threads, and bursts on one channel) spread over the year before loading; mixed channels and
directions; enrichment with sentiment, issue and importance; about 3 % near-duplicates of an
earlier memory of the same customer on another channel. Queries are tweets held back from it.

    .venv/bin/python scripts/bench_scale.py                       # 1M memories, fresh home
    .venv/bin/python scripts/bench_scale.py --customers 200 --per-customer 50 --home /tmp/bs
    .venv/bin/python scripts/bench_scale.py --home /tmp/bs --skip-load  # measure again

Loading commits every ``--chunk-customers`` customers and resumes where it stopped when run
again on the same home; progress goes to stderr, the report (one JSON document) to stdout.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

BENCH_VERSION = 1
COPY_COLUMNS = (
    "tenant_id, memory_id, interaction_id, version, customer_id, channel, direction,"
    " occurred_at, recorded_at, text, subject, actor_id, thread_id, attributes, content_sha256,"
    " enrichment, embedding, trace_id, span_id, near_duplicate_of, near_duplicate_similarity"
)
COPY_TYPES = [
    "text", "uuid", "text", "int4", "text", "int2", "int2", "timestamptz", "timestamptz",
    "text", "text", "text", "text", "jsonb", "bytea", "jsonb", "vector", "text", "text",
    "uuid", "float4",
]  # fmt: skip
# Dropped before COPY and rebuilt after it exactly as the migrations defined them (the
# definitions are read from the catalog and kept in the home's bench_scale.json).
BULK_INDEX_METHODS = ("hnsw", "gin")
# Channel values (memcrm.v1.Channel) and how often a conversation happens on each.
CHANNELS = {1: 0.25, 2: 0.25, 3: 0.1, 4: 0.1, 5: 0.15, 7: 0.1, 8: 0.05}
THREADED = {1, 2, 7}  # email, chat and tickets carry a thread id; the others rely on time gaps
SUBJECTED = {1, 7}
GRPC_FIRST = ("Recall_grpc", "Recall_sql", "SearchMemories_grpc", "SearchMemories_sql")
SQL_FIRST = ("Recall_sql", "Recall_grpc", "SearchMemories_sql", "SearchMemories_grpc")
PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "max_parallel_workers_per_gather",
    "jit",
    "random_page_cost",
)


def log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float | int]:
    return {
        "p50_ms": round(percentile(samples, 0.50), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "mean_ms": round(float(np.mean(samples)), 2),
        "n": len(samples),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tweet:
    text: str
    airline: str
    sentiment: str
    sentiment_confidence: float
    reason: str
    reason_confidence: float


@dataclass(frozen=True)
class Corpus:
    pool: list[Tweet]  # texts memories are made of
    held_back: list[str]  # query texts, never stored
    embeddings: NDArray[np.float32]  # one per pool tweet


def tweets_csv() -> Path:
    from memcrm.models.enrichment_data import default_data_dir

    return default_data_dir() / "airline-tweets" / "Tweets.csv"


def read_tweets(path: Path) -> list[Tweet]:
    seen: dict[str, Tweet] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = " ".join(row["text"].split())
            if text and text not in seen:
                seen[text] = Tweet(
                    text=text,
                    airline=row["airline"],
                    sentiment=row["airline_sentiment"],
                    sentiment_confidence=float(row["airline_sentiment_confidence"] or 0),
                    reason=row["negativereason"],
                    reason_confidence=float(row["negativereason_confidence"] or 0),
                )
    return list(seen.values())


def load_corpus(home: Path, seed: int, held_back: int) -> Corpus:
    """Unique tweets split (seeded) into the memory pool and held-back queries; the pool's
    embeddings are computed once and cached in ``home``."""
    tweets = read_tweets(tweets_csv())
    order = list(range(len(tweets)))
    random.Random(seed).shuffle(order)
    queries = [tweets[i].text for i in order[:held_back]]
    pool = [tweets[i] for i in sorted(order[held_back:])]
    digest = hashlib.sha256("\n".join(t.text for t in pool).encode()).hexdigest()[:16]
    cache = home / f"pool-embeddings-{digest}.npy"
    if cache.exists():
        embeddings = np.load(cache)
    else:
        from memcrm.models.encoder import Encoder

        log(f"encoding {len(pool)} unique tweet texts once (cached in {cache.name})")
        started = time.perf_counter()
        embeddings = Encoder().encode([t.text for t in pool])
        np.save(cache, embeddings)
        log(f"encoded in {time.perf_counter() - started:.0f}s")
    return Corpus(pool, queries, np.asarray(embeddings, dtype=np.float32))


def customer_id(i: int) -> str:
    return f"scale-c{i:06d}"


def enrichment_of(tweet: Tweet, importance: float) -> dict[str, Any]:
    sign = {"negative": -1.0, "positive": 1.0}.get(tweet.sentiment, 0.0)
    issue = {"name": tweet.reason, "confidence": tweet.reason_confidence} if tweet.reason else None
    return {
        "model_version": "bench-scale",
        "sentiment": {"name": tweet.sentiment, "confidence": tweet.sentiment_confidence},
        "sentiment_score": round(sign * tweet.sentiment_confidence, 3),
        "intents": [],
        "issue": issue,
        "entities": [],
        "objections": [],
        "topics": [],
        "importance": importance,
        "redactions": [],
    }


BASE_IMPORTANCE = {"negative": 0.6, "neutral": 0.3, "positive": 0.2}


def customer_rows(
    corpus: Corpus, args: argparse.Namespace, index: int, start: datetime, span_days: float
) -> Iterator[tuple[Any, ...]]:
    """One customer's memories, the same for the same (seed, index) whatever the chunking."""
    rng = np.random.default_rng([args.seed, index])
    cid = customer_id(index)
    tenant = args.tenant
    n = args.per_customer
    sessions = max(1, n // 4)
    session_start = np.sort(rng.uniform(0.0, span_days - 1.0, sessions))
    session_channel = rng.choice(list(CHANNELS), size=sessions, p=list(CHANNELS.values()))
    session_of = np.sort(rng.integers(0, sessions, n))
    first = np.searchsorted(session_of, session_of, side="left")
    position = np.arange(n) - first
    minutes = position * 6.0 + rng.uniform(0.0, 5.0, n)  # turns a few minutes apart
    texts = rng.integers(0, len(corpus.pool), n)
    inbound = rng.random(n) < 0.75
    agents = rng.integers(0, 50, n)
    importance_noise = rng.normal(0.0, 0.15, n)
    recorded_delay = rng.uniform(0.5, 5.0, n)
    ids = [uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(n)]
    traces = [(rng.bytes(16).hex(), rng.bytes(8).hex()) for _ in range(sessions)]
    channel = session_channel[session_of].astype(int)
    # Near-duplicates: the same thing said again later on another channel (email, then ticket).
    duplicate_of = np.full(n, -1)
    for j in np.nonzero(rng.random(n) < 0.03)[0]:
        if j > 0:
            k = int(rng.integers(0, j))
            root = k if duplicate_of[k] < 0 else int(duplicate_of[k])
            duplicate_of[j] = root
            texts[j] = texts[root]
            channel[j] = 7 if channel[root] != 7 else 1
    vectors = (
        corpus.embeddings[texts] + rng.standard_normal((n, 384), dtype=np.float32) * args.noise
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for j in range(n):
        tweet = corpus.pool[int(texts[j])]
        session = int(session_of[j])
        occurred = start + timedelta(days=float(session_start[session]), minutes=float(minutes[j]))
        ch = int(channel[j])
        interaction_id = f"{cid}-{j:04d}"
        importance = BASE_IMPORTANCE.get(tweet.sentiment, 0.3) + float(importance_noise[j])
        root = int(duplicate_of[j])
        yield (
            tenant,
            ids[j],
            interaction_id,
            1,
            cid,
            ch,
            1 if inbound[j] else 2,
            occurred,
            occurred + timedelta(seconds=float(recorded_delay[j])),
            tweet.text,
            f"{tweet.airline}: {tweet.reason or 'feedback'}" if ch in SUBJECTED else "",
            cid if inbound[j] else f"agent-{int(agents[j]):02d}",
            f"{cid}-t{session}" if ch in THREADED else "",
            Jsonb({"airline": tweet.airline, "source": "bench_scale"}),
            hashlib.sha256(f"{interaction_id}\n{tweet.text}".encode()).digest(),
            Jsonb(enrichment_of(tweet, round(min(max(importance, 0.0), 1.0), 3))),
            vectors[j],
            traces[session][0],
            traces[session][1],
            ids[root] if root >= 0 else None,
            float(vectors[j] @ vectors[root]) if root >= 0 else None,
        )


# Loading ----------------------------------------------------------------------------------


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(url, autocommit=autocommit, row_factory=dict_row)
    register_vector(conn)
    return conn


def loaded_customers(conn: psycopg.Connection[dict[str, Any]], tenant: str) -> int:
    """Customers are loaded in order, a chunk per transaction: the next one to load."""
    row = conn.execute(
        "SELECT max(customer_id) AS c FROM memories WHERE tenant_id = %s"
        " AND customer_id LIKE 'scale-c%%'",
        (tenant,),
    ).fetchone()
    return 0 if row is None or row["c"] is None else int(row["c"].removeprefix("scale-c")) + 1


def existing_indexes(conn: psycopg.Connection[dict[str, Any]]) -> dict[str, str]:
    """The memories table's indexes: name -> definition."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = 'memories'"
    )
    return {r["indexname"]: r["indexdef"] for r in rows.fetchall()}


def bulk_indexes(indexes: dict[str, str]) -> dict[str, str]:
    return {
        name: ddl
        for name, ddl in indexes.items()
        if any(f" USING {method} " in ddl for method in BULK_INDEX_METHODS)
    }


def load(args: argparse.Namespace, url: str, corpus: Corpus, meta_path: Path) -> dict[str, Any]:
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    shape = {
        "bench_version": BENCH_VERSION,
        "tenant": args.tenant,
        "customers": args.customers,
        "per_customer": args.per_customer,
        "seed": args.seed,
        "noise": args.noise,
        "held_back": args.held_back,
    }
    if meta and meta.get("shape") != shape:
        raise SystemExit(
            f"{meta_path} holds another data set {meta.get('shape')}; use a fresh --home"
        )
    if not meta:
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        meta = {"shape": shape, "data_end": end.isoformat(), "timings_s": {}}
        meta_path.write_text(json.dumps(meta, indent=2))
    end = datetime.fromisoformat(meta["data_end"])
    span_days = 365.0
    start = end - timedelta(days=span_days)
    timings: dict[str, float] = meta["timings_s"]
    notices: list[str] = []

    def save() -> None:
        meta_path.write_text(json.dumps(meta, indent=2))

    with connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        first = loaded_customers(conn, args.tenant)
        indexes = existing_indexes(conn)
        if "bulk_indexes" not in meta:
            meta["bulk_indexes"] = bulk_indexes(indexes)
            save()
        wanted: dict[str, str] = meta["bulk_indexes"]
        if first >= args.customers and set(wanted) <= set(indexes) and meta.get("analyzed"):
            log(f"all {args.customers} customers already loaded and indexed")
            return meta
        if first < args.customers:
            for name in wanted:
                if name in indexes:
                    log(f"dropping {name} for the bulk load")
                    conn.execute(f"DROP INDEX {name}".encode())
            log(f"loading customers {first}..{args.customers - 1} ({args.per_customer} each)")
            conn.execute("SET synchronous_commit = off")
            total = time.perf_counter()
            for chunk in range(first, args.customers, args.chunk_customers):
                last = min(chunk + args.chunk_customers, args.customers)
                t0 = time.perf_counter()
                rows = [
                    row
                    for i in range(chunk, last)
                    for row in customer_rows(corpus, args, i, start, span_days)
                ]
                t1 = time.perf_counter()
                with conn.transaction(), conn.cursor() as cur:
                    sql = f"COPY memories ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                    with cur.copy(sql.encode()) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in rows:
                            copy.write_row(row)
                t2 = time.perf_counter()
                timings["generate"] = timings.get("generate", 0.0) + (t1 - t0)
                timings["copy"] = timings.get("copy", 0.0) + (t2 - t1)
                save()
                done = last * args.per_customer
                rate = (last - first) * args.per_customer / (time.perf_counter() - total)
                log(
                    f"  {done:,} memories: chunk generated {t1 - t0:.1f}s, copied {t2 - t1:.1f}s"
                    f" ({rate:,.0f} rows/s so far)"
                )
            meta.pop("analyzed", None)
            save()
        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        for name, ddl in wanted.items():
            if name in existing_indexes(conn):
                continue
            log(f"building {ddl}")
            t0 = time.perf_counter()
            conn.execute(ddl.encode())
            timings[f"index_{name}"] = time.perf_counter() - t0
            save()
            log(f"built {name} in {timings[f'index_{name}']:.0f}s")
        t0 = time.perf_counter()
        conn.execute("ANALYZE memories")
        timings["analyze"] = time.perf_counter() - t0
        meta["analyzed"] = True
        if notices:
            meta["load_notices"] = notices
        save()
    return meta


# Measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchCase:
    kind: str  # plain | last_7_days | one_per_customer
    after: datetime | None
    one_per_customer: bool


class BareSql:
    """The store's statements on a direct connection (what ``MemoryStore`` would run)."""

    def __init__(self, url: str, tenant: str) -> None:
        from memcrm.memory.ranking import RecallWeights, weight_params
        from memcrm.memory.store import _M_COLUMNS

        self.conn = connect(url)
        self.tenant = tenant
        self.columns = _M_COLUMNS
        self.weights = weight_params(RecallWeights())

    def close(self) -> None:
        self.conn.close()

    def recall(
        self, customer: str, query: NDArray[np.float32], text: str, top_k: int, explain: str = ""
    ) -> tuple[float, list[dict[str, Any]]]:
        from memcrm.memory.ranking import recall_sql

        sql = explain + recall_sql(self.columns, with_query=True, channel_filter=False)
        params: dict[str, object] = {
            "tenant": self.tenant,
            "customer": customer,
            "as_of": datetime.now(UTC),
            "query": query,
            "query_text": text,
            "top_k": top_k,
            "channels": [],
            **self.weights,
        }
        start = time.perf_counter()
        rows = self.conn.execute(sql.encode(), params).fetchall()
        elapsed = (time.perf_counter() - start) * 1000
        self.conn.commit()
        return elapsed, rows

    def search_params(
        self, query: NDArray[np.float32], text: str, top_k: int, case: SearchCase
    ) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "as_of": datetime.now(UTC),
            "after": case.after,
            "before": None,
            "channels": [],
            "query": query,
            "query_text": text,
            "candidates": max(4 * top_k, 40),  # as MemoryStore.search
            "top_k": top_k,
            **self.weights,
        }

    def search(
        self,
        query: NDArray[np.float32],
        text: str,
        top_k: int,
        case: SearchCase,
        *,
        explain: str = "",
        exact: bool = False,
    ) -> tuple[float, list[dict[str, Any]]]:
        from memcrm.memory.ranking import SEARCH_SETTINGS, search_sql

        sql = explain + search_sql(
            self.columns, channel_filter=False, one_per_customer=case.one_per_customer
        )
        params = self.search_params(query, text, top_k, case)
        with self.conn.transaction():
            for setting in SEARCH_SETTINGS:
                self.conn.execute(setting.encode())
            if exact:
                self.conn.execute(b"SET LOCAL enable_indexscan = off")
            start = time.perf_counter()
            rows = self.conn.execute(sql.encode(), params).fetchall()
            elapsed = (time.perf_counter() - start) * 1000
        return elapsed, rows

    def nearest(
        self,
        query: NDArray[np.float32],
        top_k: int,
        case: SearchCase,
        *,
        exact: bool,
        ef_search: int | None = None,
    ) -> list[tuple[str, float]]:
        """The ``near`` candidates of ``search_sql`` alone (its filters, its LIMIT), with their
        cosine distances; ``ef_search`` overrides the store's."""
        from memcrm.memory.ranking import SEARCH_SETTINGS, VISIBLE

        sql = (
            "SELECT memory_id, embedding <=> %(query)s AS distance FROM memories"
            f" WHERE tenant_id = %(tenant)s AND {VISIBLE}"
            " AND (%(after)s::timestamptz IS NULL OR occurred_at >= %(after)s)"
            " AND (%(before)s::timestamptz IS NULL OR occurred_at < %(before)s)"
            " ORDER BY embedding <=> %(query)s LIMIT %(candidates)s"
        )
        params = self.search_params(query, "", top_k, case)
        with self.conn.transaction():
            for setting in SEARCH_SETTINGS:
                self.conn.execute(setting.encode())
            if ef_search is not None:
                self.conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}".encode())
            if exact:
                self.conn.execute(b"SET LOCAL enable_indexscan = off")
            rows = self.conn.execute(sql.encode(), params).fetchall()
        return [(str(r["memory_id"]), float(r["distance"])) for r in rows]

    def lexical_matches(self, text: str) -> int:
        """How many of the tenant's memories the ``lexical`` part's probe matches."""
        from memcrm.memory.ranking import TEXT_SEARCH_CONFIG

        row = self.conn.execute(
            "WITH probe AS (SELECT coalesce(to_tsquery('simple', string_agg(quote_literal(lexeme),"
            " ' | ')), ''::tsquery) AS q FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector("
            f"'{TEXT_SEARCH_CONFIG}', %(t)s))) terms)"
            " SELECT count(*) AS n FROM memories, probe WHERE tenant_id = %(tenant)s"
            " AND lexemes @@ probe.q",
            {"t": text, "tenant": self.tenant},
        ).fetchone()
        self.conn.commit()
        return int(row["n"]) if row else 0


def plan_summary(rows: list[dict[str, Any]], query_text: str = "") -> dict[str, Any]:
    """Which scans served which part of the statement, and where the time went (the nodes
    with the most exclusive time), from EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)."""
    doc = rows[0]["QUERY PLAN"]
    doc = doc[0] if isinstance(doc, list) else doc
    scans: list[str] = []
    own: list[tuple[float, str]] = []

    def total_ms(node: dict[str, Any]) -> float:
        return float(node.get("Actual Total Time", 0.0)) * int(node.get("Actual Loops", 1))

    def walk(node: dict[str, Any], label: str) -> None:
        if "Subplan Name" in node:
            label = node["Subplan Name"]
        elif node["Node Type"] in ("CTE Scan", "Subquery Scan") and "Alias" in node:
            label = node["Alias"]
        kind = node["Node Type"]
        where = label or "main"
        if "Index Name" in node or kind == "Seq Scan":
            target = node.get("Index Name") or node.get("Relation Name", "?")
            removed = node.get("Rows Removed by Filter", 0)
            extra = f", {removed} removed by filter" if removed else ""
            scans.append(
                f"{where}: {kind} on {target} ({node.get('Actual Rows', 0)} rows"
                f" x {node.get('Actual Loops', 1)} loops{extra}, {total_ms(node):.1f} ms)"
            )
        if kind == "Bitmap Heap Scan":
            exact, lossy = node.get("Exact Heap Blocks", 0), node.get("Lossy Heap Blocks", 0)
            scans.append(
                f"{where}: Bitmap Heap Scan ({node.get('Actual Rows', 0)} rows, heap blocks"
                f" exact {exact} lossy {lossy},"
                f" {node.get('Rows Removed by Index Recheck', 0)} removed by recheck,"
                f" {total_ms(node):.1f} ms)"
            )
        children = node.get("Plans", [])
        exclusive = total_ms(node) - sum(
            total_ms(c) for c in children if c.get("Parent Relationship") != "InitPlan"
        )
        detail = node.get("Sort Key") or node.get("Hash Cond") or node.get("Recheck Cond") or ""
        own.append((exclusive, f"{where}: {kind} {detail}".strip()[:160]))
        for child in children:
            walk(child, label)

    walk(doc["Plan"], "")
    indexes = sorted({s.split(" on ")[1].split(" (")[0] for s in scans if " on " in s})
    hot = sorted(own, reverse=True)[:4]
    return {
        "query_text": query_text,
        "execution_ms": round(float(doc["Execution Time"]), 2),
        "planning_ms": round(float(doc["Planning Time"]), 2),
        "hnsw_used": "memories_embedding_hnsw" in indexes,
        "relations_and_indexes": indexes,
        "scans": scans,
        "most_exclusive_time": [f"{ms:.1f} ms {what}" for ms, what in hot],
    }


def measure(args: argparse.Namespace, url: str, redis_url: str, corpus: Corpus) -> dict[str, Any]:
    import grpc

    from memcrm.core.settings import Settings
    from memcrm.models.encoder import Encoder
    from memcrm.services.run import ServeRuntime
    from memcrm.v1 import memory_pb2, memory_pb2_grpc

    rng = random.Random(args.seed + 1)
    total = args.warmup + args.queries
    texts = [rng.choice(corpus.held_back) for _ in range(total)]
    customers = [customer_id(rng.randrange(args.customers)) for _ in range(total)]
    log(f"encoding {total} query texts for the bare SQL (the encoder stays out of its timing)")
    encoder = Encoder()
    unique = sorted(set(texts))
    vectors = dict(zip(unique, encoder.encode(unique), strict=True))

    bare = BareSql(url, args.tenant)
    row = bare.conn.execute(
        "SELECT max(occurred_at) AS m FROM memories WHERE tenant_id = %s", (args.tenant,)
    ).fetchone()
    bare.conn.commit()
    newest = row["m"] if row and row["m"] else datetime.now(UTC)
    week = newest - timedelta(days=7)
    cases = [
        SearchCase("plain", None, False),
        SearchCase("last_7_days", week, False),
        SearchCase("one_per_customer", None, True),
    ]

    settings = Settings(
        home=args.home,
        grpc_port=free_port(),
        http_port=free_port(),
        database_url=url,
        redis_url=redis_url,
    )
    runtime = ServeRuntime(settings, url, redis_url)
    log("starting Ray Serve")
    t0 = time.perf_counter()
    try:
        runtime.start()
        install_signal_handlers()  # ray.init replaces them
        service_start_s = time.perf_counter() - t0
        log(f"service ready on {runtime.address} in {service_start_s:.0f}s")
        md = [("authorization", f"Bearer {args.api_key}")]
        with grpc.insecure_channel(runtime.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)

            def grpc_recall(i: int) -> tuple[float, list[str]]:
                request = memory_pb2.RecallRequest(
                    customer_id=customers[i], query=texts[i], top_k=args.top_k
                )
                start = time.perf_counter()
                response = stub.Recall(request, metadata=md, timeout=120)
                elapsed = (time.perf_counter() - start) * 1000
                return elapsed, [m.memory.memory_id for m in response.memories]

            def grpc_search(i: int) -> tuple[float, list[str]]:
                case = cases[i % len(cases)]
                request = memory_pb2.SearchMemoriesRequest(
                    query=texts[i], top_k=args.top_k, one_per_customer=case.one_per_customer
                )
                if case.after is not None:
                    request.occurred_after.FromDatetime(case.after)
                start = time.perf_counter()
                response = stub.SearchMemories(request, metadata=md, timeout=120)
                elapsed = (time.perf_counter() - start) * 1000
                return elapsed, [m.memory.memory_id for m in response.memories]

            def sql_recall(i: int) -> tuple[float, list[str]]:
                ms, rows = bare.recall(customers[i], vectors[texts[i]], texts[i], args.top_k)
                return ms, [str(r["memory_id"]) for r in rows]

            def sql_search(i: int) -> tuple[float, list[str]]:
                case = cases[i % len(cases)]
                ms, rows = bare.search(vectors[texts[i]], texts[i], args.top_k, case)
                return ms, [str(r["memory_id"]) for r in rows]

            steps: dict[str, Callable[[int], tuple[float, list[str]]]] = {
                "Recall_grpc": grpc_recall,
                "Recall_sql": sql_recall,
                "SearchMemories_grpc": grpc_search,
                "SearchMemories_sql": sql_search,
            }
            samples: dict[str, list[float]] = {name: [] for name in steps}
            by_case: dict[str, list[float]] = {f"{c.kind}_{w}": [] for c in cases for w in "gs"}
            same = {"Recall": 0, "SearchMemories": 0}
            lengths: dict[str, list[int]] = {name: [] for name in steps}
            case_results: dict[str, list[int]] = {c.kind: [] for c in cases}
            log(f"{args.warmup} warm-up rounds, then {args.queries} measured rounds")
            for i in range(total):
                results: dict[str, tuple[float, list[str]]] = {}
                # gRPC first on even rounds, bare SQL first on odd ones: neither always finds
                # the pages the other just read.
                order = GRPC_FIRST if i % 2 == 0 else SQL_FIRST
                for name in order:
                    results[name] = steps[name](i)
                if i < args.warmup:
                    continue
                for name, (ms, ids) in results.items():
                    samples[name].append(ms)
                    lengths[name].append(len(ids))
                case = cases[i % len(cases)].kind
                by_case[f"{case}_g"].append(results["SearchMemories_grpc"][0])
                by_case[f"{case}_s"].append(results["SearchMemories_sql"][0])
                case_results[case].append(len(results["SearchMemories_grpc"][1]))
                for rpc in same:
                    same[rpc] += results[f"{rpc}_grpc"][1] == results[f"{rpc}_sql"][1]
                if (i + 1 - args.warmup) % 50 == 0 and i >= args.warmup:
                    log(f"  {i + 1 - args.warmup} rounds")
    finally:
        log("stopping Ray Serve")
        runtime.stop()

    report: dict[str, Any] = {}
    for rpc in ("Recall", "SearchMemories"):
        g, s = samples[f"{rpc}_grpc"], samples[f"{rpc}_sql"]
        report[rpc] = {
            "grpc": summary(g),
            "bare_sql": summary(s),
            "p50_ratio_grpc_vs_sql": round(percentile(g, 0.5) / percentile(s, 0.5), 2),
            "p99_ratio_grpc_vs_sql": round(percentile(g, 0.99) / percentile(s, 0.99), 2),
            "same_ids_grpc_and_sql": f"{same[rpc]}/{len(g)}",
            "mean_results": round(float(np.mean(lengths[f"{rpc}_grpc"])), 2),
        }
    report["SearchMemories"]["by_kind"] = {
        c.kind: {
            "grpc": summary(by_case[f"{c.kind}_g"]),
            "bare_sql": summary(by_case[f"{c.kind}_s"]),
            "mean_results": round(float(np.mean(case_results[c.kind])), 2),
        }
        for c in cases
    }
    report["SearchMemories"]["last_7_days_from"] = week.isoformat()

    log("EXPLAIN (ANALYZE) of one Recall and one search of each kind")
    explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
    i = args.warmup
    _, plan = bare.recall(customers[i], vectors[texts[i]], texts[i], args.top_k, explain)
    report["explain"] = {"Recall": plan_summary(plan, texts[i])}
    for case in cases:
        _, plan = bare.search(vectors[texts[i]], texts[i], args.top_k, case, explain=explain)
        report["explain"][f"SearchMemories_{case.kind}"] = plan_summary(plan, texts[i])

    report["hnsw_vs_exact"] = quality(args, bare, corpus, vectors, cases, encoder)
    report["service_start_s"] = round(service_start_s, 1)
    bare.close()
    return report


def quality(
    args: argparse.Namespace,
    bare: BareSql,
    corpus: Corpus,
    vectors: dict[str, NDArray[np.float32]],
    cases: list[SearchCase],
    encoder: Any,
) -> dict[str, Any]:
    """The tenant-wide search with the HNSW index (iterative scan) against the same statement
    with index scans off (exact): overlap of the results, and recall of the ``near``
    candidates alone, by id and by distance (a candidate counts when it is at least as close
    as the exact k-th one, so equally close copies of one text do not count as misses)."""
    rng = random.Random(args.seed + 2)
    texts = [rng.choice(corpus.held_back) for _ in range(args.quality_queries)]
    missing = sorted({t for t in texts if t not in vectors})
    if missing:
        vectors = {**vectors, **dict(zip(missing, encoder.encode(missing), strict=True))}
    log(f"HNSW vs exact on {len(texts)} searches (exact = index scans off, slow)")
    out: dict[str, Any] = {}
    sweep = [int(x) for x in args.ef_sweep.split(",") if x]
    for n, case in enumerate(cases):
        overlaps, text_overlaps, by_id, by_distance, short, exact_ms = [], [], [], [], 0, []
        ef_recall: dict[int, list[float]] = {ef: [] for ef in sweep}
        for text in texts[n :: len(cases)]:
            q = vectors[text]
            _, approx = bare.search(q, text, args.top_k, case)
            ms, exact = bare.search(q, text, args.top_k, case, exact=True)
            exact_ms.append(ms)
            a = {str(r["memory_id"]) for r in approx}
            e = {str(r["memory_id"]) for r in exact}
            overlaps.append(len(a & e) / max(1, len(e)))
            a_texts = {r["text"] for r in approx}
            e_texts = {r["text"] for r in exact}
            text_overlaps.append(len(a_texts & e_texts) / max(1, len(e_texts)))
            short += len(approx) < min(args.top_k, len(exact))
            near_e = bare.nearest(q, args.top_k, case, exact=True)
            kth = near_e[-1][1] + 1e-6 if near_e else 0.0
            ids_e = {i for i, _ in near_e}
            wanted = len(near_e)
            near_a = bare.nearest(q, args.top_k, case, exact=False)
            by_id.append(len({i for i, _ in near_a} & ids_e) / max(1, len(ids_e)))
            by_distance.append(within(near_a, kth, wanted))
            for ef in sweep:
                found = bare.nearest(q, args.top_k, case, exact=False, ef_search=ef)
                ef_recall[ef].append(within(found, kth, wanted))
        out[case.kind] = {
            "queries": len(overlaps),
            f"overlap_at_{args.top_k}_ids_mean": round(float(np.mean(overlaps)), 3),
            f"overlap_at_{args.top_k}_ids_min": round(float(np.min(overlaps)), 3),
            f"overlap_at_{args.top_k}_texts_mean": round(float(np.mean(text_overlaps)), 3),
            "searches_with_fewer_results_than_exact": short,
            "hnsw_candidates_recall_by_id_mean": round(float(np.mean(by_id)), 3),
            "hnsw_candidates_recall_by_distance_mean": round(float(np.mean(by_distance)), 3),
            "hnsw_candidates_recall_by_distance_min": round(float(np.min(by_distance)), 3),
            "hnsw_candidates_missed_entirely": sum(r == 0 for r in by_distance),
            "hnsw_candidates_recall_by_ef_search": {
                str(ef): round(float(np.mean(v)), 3) for ef, v in ef_recall.items()
            },
            "exact_search_p50_ms": round(percentile(exact_ms, 0.5), 1),
        }
    matches = [bare.lexical_matches(t) for t in texts]
    total = max(1, bare_count(bare))
    out["lexical_probe_matches"] = {
        "queries": len(matches),
        "p50_rows": int(percentile([float(m) for m in matches], 0.5)),
        "max_rows": max(matches),
        "p50_fraction_of_tenant": round(percentile([m / total for m in matches], 0.5), 3),
    }
    return out


def within(found: list[tuple[str, float]], kth: float, wanted: int) -> float:
    """Recall by distance: the share of the exact answer's size found at least as close."""
    return sum(d <= kth for _, d in found) / max(1, wanted)


def bare_count(bare: BareSql) -> int:
    row = bare.conn.execute(
        "SELECT count(*) AS n FROM memories WHERE tenant_id = %s", (bare.tenant,)
    ).fetchone()
    bare.conn.commit()
    return int(row["n"]) if row else 0


def database_facts(url: str, tenant: str) -> dict[str, Any]:
    with connect(url, autocommit=True) as conn:
        facts: dict[str, Any] = {}
        for name in PG_SETTINGS:
            row = conn.execute(f"SHOW {name}").fetchone()
            facts[name] = row[name] if row else None
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        facts["pgvector"] = row["extversion"] if row else None
        row = conn.execute(
            "SELECT count(*) AS n, count(DISTINCT customer_id) AS c FROM memories"
            " WHERE tenant_id = %s",
            (tenant,),
        ).fetchone()
        assert row is not None
        facts["memories"] = int(row["n"])
        facts["customers"] = int(row["c"])
        sizes = conn.execute(
            "SELECT pg_total_relation_size('memories') AS total,"
            " pg_relation_size('memories') AS heap,"
            " pg_indexes_size('memories') AS indexes"
        ).fetchone()
        assert sizes is not None
        facts["table_size_mb"] = {k: round(v / 2**20, 1) for k, v in sizes.items()}
        rows = conn.execute(
            "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS size"
            " FROM pg_index WHERE indrelid = 'memories'::regclass ORDER BY 2 DESC"
        ).fetchall()
        facts["index_size_mb"] = {r["name"]: round(r["size"] / 2**20, 1) for r in rows}
        facts["bulk_index_definitions"] = sorted(bulk_indexes(existing_indexes(conn)).values())
        return facts


# Main -------------------------------------------------------------------------------------


class Stopped(Exception):
    pass


def install_signal_handlers() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


@contextmanager
def stores(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.database_url and args.redis_url:
        yield args.database_url, args.redis_url
        return
    import logging

    from memcrm.memory.embedded import EmbeddedStores

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with EmbeddedStores(args.home, args.database_url, args.redis_url) as s:
        yield s.database_url, s.redis_url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, help="stores and caches (default: a new /tmp dir)")
    parser.add_argument("--database-url", help="an external PostgreSQL (psycopg URL)")
    parser.add_argument("--redis-url", help="an external Redis")
    parser.add_argument("--tenant", default="demo", help="the API key's tenant")
    parser.add_argument("--api-key", default="memcrm-dev")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--per-customer", type=int, default=100)
    parser.add_argument("--chunk-customers", type=int, default=500, help="per COPY transaction")
    parser.add_argument("--noise", type=float, default=0.01, help="per-dimension sigma")
    parser.add_argument("--held-back", type=int, default=1000, help="tweets kept for queries")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--maintenance-work-mem", default="4GB")
    parser.add_argument("--skip-load", action="store_true", help="measure an already loaded home")
    parser.add_argument("--load-only", action="store_true", help="load and index, then stop")
    parser.add_argument("--queries", type=int, default=200, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--quality-queries", type=int, default=51)
    parser.add_argument(
        "--ef-sweep", default="40,100,200,400,800", help="hnsw.ef_search values to compare"
    )
    args = parser.parse_args()
    if args.home is None:
        args.home = Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
    ):
        os.environ.setdefault(key, value)
    install_signal_handlers()
    # Ray prints its workers' logs to stdout; keep stdout for the report alone.
    sys.stdout.flush()
    report_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    log(f"home {args.home}")

    from memcrm.memory.migrate import migrate

    meta_path = args.home / "bench_scale.json"
    started = time.perf_counter()
    with stores(args) as (url, redis_url):
        # A migration may rebuild an index over the loaded rows: give it the bulk load's memory.
        options = (
            f"-c maintenance_work_mem={args.maintenance_work_mem}"
            " -c max_parallel_maintenance_workers=1"
        )
        t0 = time.perf_counter()
        applied = migrate(make_conninfo(url, options=options))
        migrate_s = time.perf_counter() - t0
        if applied:
            log(f"applied migrations {applied} in {migrate_s:.0f}s")
        corpus = load_corpus(args.home, args.seed, args.held_back)
        if args.skip_load:
            if not meta_path.exists():
                raise SystemExit(f"--skip-load: nothing loaded in {args.home}")
            meta = json.loads(meta_path.read_text())
            args.customers = meta["shape"]["customers"]
        else:
            meta = load(args, url, corpus, meta_path)
        facts = database_facts(url, args.tenant)
        log(f"{facts['memories']:,} memories; sizes {facts['table_size_mb']}")
        report: dict[str, Any] = {}
        if not args.load_only:
            report = measure(args, url, redis_url, corpus)
    report = {
        "data": {
            **meta["shape"],
            "pool_texts": len(corpus.pool),
            "data_end": meta["data_end"],
            "memories": facts["memories"],
            "distinct_customers": facts["customers"],
        },
        **report,
        "load_s": {k: round(v, 1) for k, v in meta["timings_s"].items()},
        "migrations_applied_this_run": {"versions": applied, "seconds": round(migrate_s, 1)},
        "load_notices": meta.get("load_notices", []),
        "table_size_mb": facts["table_size_mb"],
        "index_size_mb": facts["index_size_mb"],
        "bulk_index_definitions": facts["bulk_index_definitions"],
        "postgres": {k: facts[k] for k in (*PG_SETTINGS, "pgvector")},
        "home": str(args.home),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    report_out.write(json.dumps(report, indent=2) + "\n")
    report_out.flush()


if __name__ == "__main__":
    main()
