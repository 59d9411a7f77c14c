"""In-process retrieval baselines over one customer's texts: BM25 and exact dense cosine.

Both rank every text for a query and break score ties by position (earlier first), so a
ranking is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from memcrm.core.ports import Embedder

BM25_STOPWORDS = "en"


def top_k(scores: NDArray[Any], k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first; ties keep index order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:k]]


class Bm25Ranker:
    """bm25s (Lucene BM25, k1 1.5, b 0.75 by default) with its English stop words."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str = BM25_STOPWORDS,
    ) -> None:
        import bm25s  # type: ignore[import-untyped]

        # bm25s sets its own logger to DEBUG on import, which logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if not texts:
            raise ValueError("BM25 needs at least one text")
        self._bm25s = bm25s
        self._stopwords = stopwords
        self._size = len(texts)
        corpus = bm25s.tokenize(list(texts), stopwords=stopwords, show_progress=False)
        self._retriever = bm25s.BM25(k1=k1, b=b, method=method)
        self._retriever.index(corpus, show_progress=False)
        self.settings: dict[str, object] = {
            "package": "bm25s",
            "method": method,
            "k1": k1,
            "b": b,
            "stopwords": stopwords,
        }

    def scores(self, query: str) -> NDArray[np.float64]:
        tokens = self._bm25s.tokenize(
            [query], stopwords=self._stopwords, return_ids=False, show_progress=False
        )[0]
        if not tokens:
            return np.zeros(self._size)
        return np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)

    def rank(self, query: str, k: int) -> list[int]:
        return top_k(self.scores(query), k)


class DenseRanker:
    """Exact cosine between L2-normalised embeddings of the query and of every text."""

    def __init__(self, embedder: Embedder, texts: Sequence[str]) -> None:
        if not texts:
            raise ValueError("dense ranking needs at least one text")
        self._embedder = embedder
        self._vectors = embedder.encode(list(texts))

    def rank_many(self, queries: Sequence[str], k: int) -> list[list[int]]:
        if not queries:
            return []
        similarity = self._embedder.encode(list(queries)) @ self._vectors.T
        return [top_k(row, k) for row in similarity]

    def rank(self, query: str, k: int) -> list[int]:
        return self.rank_many([query], k)[0]
