"""Hybrid recall: how a customer's memories are ranked for a query, inside PostgreSQL.

One SQL statement scores every memory of the customer visible at ``as_of`` (exact search: one
customer's memories are few enough to score all of them) and returns the best ``top_k``:

``score = semantic + lexical + recency + importance + context``, each part already weighted,
so the parts a client sees in ``ScoreParts`` add up to the score.

- **semantic**: cosine similarity of the memory's embedding to the query's (pgvector ``<=>``),
  min-max scaled over the customer's memories, times ``semantic`` weight;
- **lexical**: Okapi BM25 of the query's lexemes (PostgreSQL ``english`` full-text
  configuration: stemming, stop words) over the memory's subject and text, with document
  frequencies and lengths taken from the customer's own visible memories, divided by the best
  BM25 of the customer, times ``lexical`` weight;
- **recency**: ``0.5 ** (age_days / half_life_days)`` at ``as_of``, times ``recency`` weight;
- **importance**: the importance interpretation gave the memory (0..1), times its weight;
- **context**: ``context`` weight times the best of the parts above among the memory's two
  neighbours in its conversation (the same ``thread_id``; without one, the same channel within
  ``conversation_gap``). A question often matches one turn while the answer is the next.

One memory per near-duplicate cluster is returned (the best scoring), so ``top_k`` is not
filled with copies of one complaint sent by email and again as a ticket.

With an empty query only recency and importance count ("the most important recent memories").

The weights were set on the LoCoMo dev conversations' *categories as a whole*, not per
question; ``make eval-memory`` reports the result beside BM25 and dense-only baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

TEXT_SEARCH_CONFIG = "english"


@dataclass(frozen=True)
class RecallWeights:
    semantic: float = 0.5
    lexical: float = 0.5
    recency: float = 0.05
    importance: float = 0.05
    context: float = 0.4
    half_life_days: float = 30.0
    conversation_gap: timedelta = timedelta(minutes=30)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


# Shared by every read: the version of each interaction that was current at %(as_of)s.
VISIBLE = "recorded_at <= %(as_of)s AND (superseded_at IS NULL OR superseded_at > %(as_of)s)"


def _importance(alias: str) -> str:
    """The importance interpretation gave a memory, clamped to 0..1 (0 when missing)."""
    return f"least(greatest(coalesce(({alias}enrichment->>'importance')::float8, 0), 0), 1)"


def _recency(alias: str) -> str:
    """``0.5 ** (age_days / half_life_days)`` at ``%(as_of)s``; 1 for future memories."""
    return (
        f"power(0.5, greatest(extract(epoch FROM %(as_of)s - {alias}occurred_at)::float8, 0)"
        " / 86400.0 / %(half_life)s)"
    )


def _min_max(column: str, weight: str) -> str:
    """``weight`` times ``column`` min-max scaled over the candidate rows (0 when constant)."""
    return (
        f"CASE WHEN max({column}) OVER () > min({column}) OVER ()"
        f" THEN {weight} * ({column} - min({column}) OVER ())"
        f" / (max({column}) OVER () - min({column}) OVER ()) ELSE 0.0 END"
    )


def recall_sql(columns: str, *, with_query: bool, channel_filter: bool) -> str:
    """The hybrid recall statement; parameters: tenant, customer, as_of, channels, top_k,
    query (vector), query_text, and the weights (``weight_params``).

    Ranking works on narrow rows (ids, signals, lexemes); only the ``top_k`` winners are joined
    back to their full rows (``columns``, prefixed ``m.``) and embeddings.
    """
    channels = "AND channel = ANY(%(channels)s)" if channel_filter else ""
    cosine = "1 - (embedding <=> %(query)s)" if with_query else "0.0::float8"
    lexical_ctes = (
        # The query's distinct lexemes; each matching memory's term frequencies for them.
        ", terms AS (SELECT DISTINCT lexeme FROM"
        f" unnest(to_tsvector('{TEXT_SEARCH_CONFIG}', %(query_text)s)))"
        ", probe AS (SELECT coalesce(to_tsquery('simple', string_agg(quote_literal(lexeme),"
        " ' | ')), ''::tsquery) AS q FROM terms)"
        ", matching AS MATERIALIZED (SELECT v.memory_id, v.lexemes FROM visible v, probe"
        " WHERE v.lexemes @@ probe.q)"
        ", tf AS (SELECT m.memory_id, u.lexeme, cardinality(u.positions)::float8 AS tf,"
        " length(m.lexemes)::float8 AS dl FROM matching m CROSS JOIN LATERAL unnest(m.lexemes) u"
        " JOIN terms t ON t.lexeme = u.lexeme)"
        ", stats AS (SELECT count(*)::float8 AS n,"
        " greatest(coalesce(avg(length(lexemes)), 1), 1)::float8 AS avgdl FROM visible)"
        ", df AS (SELECT lexeme, count(*)::float8 AS df FROM tf GROUP BY lexeme)"
        ", bm25 AS (SELECT tf.memory_id, sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5))"
        " * tf.tf * (%(k1)s + 1) / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * tf.dl / s.avgdl)))"
        " AS bm25 FROM tf JOIN df USING (lexeme) CROSS JOIN stats s GROUP BY tf.memory_id)"
        if with_query
        else ", bm25 AS (SELECT NULL::uuid AS memory_id, 0.0::float8 AS bm25 WHERE FALSE)"
    )
    return (
        "WITH visible AS MATERIALIZED (SELECT memory_id, occurred_at, lexemes,"
        " coalesce(near_duplicate_of, memory_id) AS cluster,"
        " CASE WHEN thread_id <> '' THEN 't:' || thread_id ELSE 'c:' || channel END"
        " AS conversation,"
        f" {_importance('')} AS importance_raw, {cosine} AS cosine FROM memories"
        f" WHERE tenant_id = %(tenant)s AND customer_id = %(customer)s AND {VISIBLE} {channels})"
        f"{lexical_ctes}"
        ", parts AS (SELECT v.memory_id, v.occurred_at, v.cluster, v.conversation,"
        f" {_min_max('v.cosine', '%(w_semantic)s')} AS p_semantic,"
        " CASE WHEN max(coalesce(b.bm25, 0)) OVER () > 0"
        " THEN %(w_lexical)s * coalesce(b.bm25, 0) / max(coalesce(b.bm25, 0)) OVER ()"
        " ELSE 0.0 END AS p_lexical,"
        f" %(w_recency)s * {_recency('v.')} AS p_recency,"
        " %(w_importance)s * v.importance_raw AS p_importance"
        " FROM visible v LEFT JOIN bm25 b USING (memory_id))"
        ", neighbours AS (SELECT *,"
        " lag(p_semantic + p_lexical) OVER w AS prev_relevance, lag(occurred_at) OVER w AS prev_at,"
        " lead(p_semantic + p_lexical) OVER w AS next_relevance, lead(occurred_at) OVER w"
        " AS next_at FROM parts WINDOW w AS (PARTITION BY conversation ORDER BY occurred_at,"
        " memory_id))"
        ", scored AS (SELECT *, %(w_context)s * coalesce(greatest("
        " CASE WHEN occurred_at - prev_at <= %(gap)s THEN prev_relevance END,"
        " CASE WHEN next_at - occurred_at <= %(gap)s THEN next_relevance END), 0.0)"
        " AS p_context FROM neighbours)"
        ", best AS (SELECT DISTINCT ON (cluster) memory_id, p_semantic, p_lexical, p_recency,"
        " p_importance, p_context,"
        " p_semantic + p_lexical + p_recency + p_importance + p_context AS score"
        " FROM scored ORDER BY cluster, score DESC, memory_id)"
        ", top AS (SELECT * FROM best ORDER BY score DESC, memory_id LIMIT %(top_k)s)"
        f" SELECT {columns}, m.embedding, top.p_semantic, top.p_lexical, top.p_recency,"
        " top.p_importance, top.p_context, top.score"
        " FROM top JOIN memories m ON m.tenant_id = %(tenant)s AND m.memory_id = top.memory_id"
        " ORDER BY top.score DESC, top.memory_id"
    )


def weight_params(weights: RecallWeights) -> dict[str, object]:
    return {
        "w_semantic": weights.semantic,
        "w_lexical": weights.lexical,
        "w_recency": weights.recency,
        "w_importance": weights.importance,
        "w_context": weights.context,
        "half_life": weights.half_life_days,
        "gap": weights.conversation_gap,
        "k1": weights.bm25_k1,
        "b": weights.bm25_b,
    }


def search_sql(columns: str, *, channel_filter: bool, one_per_customer: bool) -> str:
    """Tenant-wide hybrid search (SearchMemories).

    Candidates come from two indexes: the HNSW index on embeddings (approximate, filtered with
    pgvector's iterative index scans, see ``SEARCH_SETTINGS``) and the GIN index on lexemes
    (memories holding every query lexeme, ranked by ``ts_rank_cd``). The union is scored with
    the same weighted parts as recall, normalised over the candidates; there is no conversation
    context part.
    Parameters: tenant, as_of, channels, after, before, query, query_text, candidates, top_k
    and the weights.
    """
    filters = (
        f"tenant_id = %(tenant)s AND {VISIBLE}"
        " AND (%(after)s::timestamptz IS NULL OR occurred_at >= %(after)s)"
        " AND (%(before)s::timestamptz IS NULL OR occurred_at < %(before)s)"
        + (" AND channel = ANY(%(channels)s)" if channel_filter else "")
    )
    distinct = "customer_id" if one_per_customer else "cluster"
    return (
        "WITH probe AS (SELECT coalesce(to_tsquery('simple', string_agg(quote_literal(lexeme),"
        f" ' | ')), ''::tsquery) AS q FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector("
        f"'{TEXT_SEARCH_CONFIG}', %(query_text)s))) terms)"
        f", near AS (SELECT memory_id FROM memories WHERE {filters}"
        " ORDER BY embedding <=> %(query)s LIMIT %(candidates)s)"
        # Lexical candidates need every query lexeme (AND): an any-lexeme probe matched half
        # of a 1M-memory tenant for a long query (seconds). Scoring below still uses any-lexeme.
        f", lexical AS (SELECT memory_id FROM memories WHERE {filters}"
        f" AND lexemes @@ plainto_tsquery('{TEXT_SEARCH_CONFIG}', %(query_text)s)"
        f" ORDER BY ts_rank_cd(lexemes, plainto_tsquery('{TEXT_SEARCH_CONFIG}',"
        " %(query_text)s)) DESC LIMIT %(candidates)s)"
        ", candidates AS (SELECT memory_id FROM near UNION SELECT memory_id FROM lexical)"
        ", signals AS (SELECT m.memory_id, m.customer_id,"
        " coalesce(m.near_duplicate_of, m.memory_id) AS cluster,"
        " 1 - (m.embedding <=> %(query)s) AS cosine,"
        " ts_rank_cd(m.lexemes, probe.q)::float8 AS rank,"
        f" {_recency('m.')} AS recency_raw, {_importance('m.')} AS importance_raw"
        " FROM candidates c JOIN memories m ON m.tenant_id = %(tenant)s"
        " AND m.memory_id = c.memory_id CROSS JOIN probe)"
        ", parts AS (SELECT memory_id, customer_id, cluster,"
        f" {_min_max('cosine', '%(w_semantic)s')} AS p_semantic,"
        " CASE WHEN max(rank) OVER () > 0 THEN %(w_lexical)s * rank / max(rank) OVER ()"
        " ELSE 0.0 END AS p_lexical,"
        " %(w_recency)s * recency_raw AS p_recency,"
        " %(w_importance)s * importance_raw AS p_importance, 0.0::float8 AS p_context"
        " FROM signals)"
        f", best AS (SELECT DISTINCT ON ({distinct}) *,"
        " p_semantic + p_lexical + p_recency + p_importance AS score"
        f" FROM parts ORDER BY {distinct}, score DESC, memory_id)"
        ", top AS (SELECT * FROM best ORDER BY score DESC, memory_id LIMIT %(top_k)s)"
        f" SELECT {columns}, m.embedding, top.p_semantic, top.p_lexical, top.p_recency,"
        " top.p_importance, top.p_context, top.score"
        " FROM top JOIN memories m ON m.tenant_id = %(tenant)s AND m.memory_id = top.memory_id"
        " ORDER BY top.score DESC, top.memory_id"
    )


# pgvector 0.8: keep scanning the HNSW graph until enough rows pass the filters (tenant, time,
# channel, visibility) instead of returning fewer than asked.
SEARCH_SETTINGS = (
    "SET LOCAL hnsw.iterative_scan = relaxed_order",
    "SET LOCAL hnsw.ef_search = 100",
)
