"""Reading memories back: recall by relevance and the timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from memcrm.core.errors import InvalidArgument
from memcrm.core.ports import Embedder
from memcrm.core.types import Channel, RecalledMemory, SearchFilter, TimelinePage
from memcrm.core.validation import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TOP_K,
    MAX_PAGE_SIZE,
    MAX_TOP_K,
    check_bounded,
    check_channel,
    check_id,
    check_text,
)
from memcrm.memory.store import MemoryStore


class MemoryReader:
    def __init__(self, store: MemoryStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    def recall(
        self,
        tenant_id: str,
        customer_id: str,
        query: str,
        *,
        top_k: int = 0,
        as_of: datetime | None = None,
        channels: Sequence[int] = (),
    ) -> list[RecalledMemory]:
        check_id("customer_id", customer_id)
        check_text("query", query)
        k = check_bounded("top_k", top_k, DEFAULT_TOP_K, MAX_TOP_K)
        wanted: list[Channel] = [
            check_channel(f"channels[{i}]", c, required=True) for i, c in enumerate(channels)
        ]
        return self._store.recall(
            tenant_id,
            customer_id,
            self.embed_query(query),
            top_k=k,
            as_of=as_of or datetime.now(UTC),
            channels=wanted,
            query_text=query,
        )

    def search(
        self,
        tenant_id: str,
        query: str,
        *,
        top_k: int = 0,
        as_of: datetime | None = None,
        channels: Sequence[int] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
        one_per_customer: bool = False,
    ) -> list[RecalledMemory]:
        """Memories across the tenant's customers that match ``query``, best first."""
        check_text("query", query)
        if not query.strip():
            raise InvalidArgument("query", "is required")
        k = check_bounded("top_k", top_k, DEFAULT_TOP_K, MAX_TOP_K)
        wanted = tuple(
            check_channel(f"channels[{i}]", c, required=True) for i, c in enumerate(channels)
        )
        if occurred_after and occurred_before and occurred_after >= occurred_before:
            raise InvalidArgument("occurred_before", "must be later than occurred_after")
        bounds = SearchFilter(
            as_of=as_of or datetime.now(UTC),
            channels=wanted,
            occurred_after=occurred_after,
            occurred_before=occurred_before,
            one_per_customer=one_per_customer,
        )
        embedding = self._embedder.encode([query])[0]
        return self._store.search(tenant_id, embedding, query, top_k=k, bounds=bounds)

    def embed_query(self, query: str) -> NDArray[np.float32] | None:
        """The query's embedding; None for an empty query (recall by recency)."""
        return self._embedder.encode([query])[0] if query.strip() else None

    def recall_embedded(
        self,
        tenant_id: str,
        customer_id: str,
        query: NDArray[np.float32] | None,
        *,
        top_k: int,
        as_of: datetime,
        query_text: str = "",
    ) -> list[RecalledMemory]:
        """Recall with an embedding the caller already has (decisions reuse the context's)."""
        check_id("customer_id", customer_id)
        return self._store.recall(
            tenant_id, customer_id, query, top_k=top_k, as_of=as_of, query_text=query_text
        )

    def timeline(
        self,
        tenant_id: str,
        customer_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        as_of: datetime | None = None,
    ) -> TimelinePage:
        check_id("customer_id", customer_id)
        size = check_bounded("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return self._store.timeline(
            tenant_id,
            customer_id,
            page_size=size,
            page_token=page_token,
            as_of=as_of or datetime.now(UTC),
        )
