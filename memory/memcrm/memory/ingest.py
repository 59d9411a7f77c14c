"""Ingestion: validate, embed and durably store interactions, idempotently."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from memcrm.core.errors import InvalidArgument
from memcrm.core.ports import Embedder
from memcrm.core.types import Enrichment, IngestOutcome, Interaction, TraceRef
from memcrm.core.validation import check_interaction
from memcrm.memory.hot import HotState, KnownVersion
from memcrm.memory.store import (
    MemoryStore,
    NewMemory,
    Stored,
    enrichment_from_json,
    enrichment_to_json,
)


def content_sha256(it: Interaction) -> bytes:
    """Identity of an interaction's content: what makes a re-send a duplicate."""
    doc = {
        "customer_id": it.customer_id,
        "channel": int(it.channel),
        "direction": int(it.direction),
        "occurred_at": it.occurred_at.astimezone(UTC).isoformat(),
        "text": it.text,
        "subject": it.subject,
        "actor_id": it.actor_id,
        "thread_id": it.thread_id,
        "attributes": dict(sorted(it.attributes.items())),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).digest()


def embedding_text(it: Interaction) -> str:
    """What the encoder reads: subject and body, or a description when there is no text."""
    parts = [p for p in (it.subject.strip(), it.text.strip()) if p]
    if parts:
        return "\n".join(parts)
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(it.attributes.items()))
    return f"{it.channel.name.lower()} {it.direction.name.lower()} {attrs}".strip()


class Ingestor:
    def __init__(self, store: MemoryStore, hot: HotState, embedder: Embedder) -> None:
        self._store = store
        self._hot = hot
        self._embedder = embedder
        self.model_version = embedder.name

    def ingest(
        self,
        tenant_id: str,
        interactions: Sequence[Interaction | InvalidArgument],
        trace: TraceRef,
        *,
        now: datetime | None = None,
        field_prefix: str = "interactions",
    ) -> list[IngestOutcome]:
        """One outcome per input, in order; a bad item fails only itself.

        Inputs that failed translation arrive as their ``InvalidArgument``. Everything valid is
        stored in one transaction before this returns.
        """
        now = now or datetime.now(UTC)
        outcomes: list[IngestOutcome | None] = [None] * len(interactions)
        valid: list[tuple[int, Interaction, bytes]] = []
        for i, item in enumerate(interactions):
            if isinstance(item, InvalidArgument):
                outcomes[i] = IngestOutcome("", error=item.message)
                continue
            try:
                check_interaction(item, f"{field_prefix}[{i}]", now)
            except InvalidArgument as exc:
                outcomes[i] = IngestOutcome(item.interaction_id, error=exc.message)
                continue
            valid.append((i, item, content_sha256(item)))

        known = self._hot.known(tenant_id, [it.interaction_id for _, it, _ in valid])
        pending: list[tuple[int, Interaction, bytes]] = []
        for i, it, digest in valid:
            hit = known.get(it.interaction_id)
            if hit is not None and hit.content_sha256 == digest:
                enrichment = enrichment_from_json(json.loads(hit.enrichment_json))
                outcomes[i] = IngestOutcome(it.interaction_id, hit.memory_id, True, enrichment)
            else:
                pending.append((i, it, digest))

        if pending:
            vectors = self._embedder.encode([embedding_text(it) for _, it, _ in pending])
            enrichment = Enrichment(model_version=self.model_version)
            stored = self._store.ingest(
                tenant_id,
                [
                    NewMemory(it, digest, vectors[n], enrichment, trace)
                    for n, (_, it, digest) in enumerate(pending)
                ],
            )
            self._hot.remember(tenant_id, _latest(stored))
            for (i, it, _), s in zip(pending, stored, strict=True):
                outcomes[i] = IngestOutcome(
                    it.interaction_id, s.memory_id, s.duplicate, s.enrichment
                )
        return [o for o in outcomes if o is not None]


def _latest(stored: Sequence[Stored]) -> dict[str, KnownVersion]:
    latest: dict[str, KnownVersion] = {}
    for s in stored:
        current = latest.get(s.interaction_id)
        if current is None or s.version > current.version:
            enrichment = json.dumps(enrichment_to_json(s.enrichment))
            latest[s.interaction_id] = KnownVersion(
                s.memory_id, s.version, s.content_sha256, enrichment
            )
    return latest
