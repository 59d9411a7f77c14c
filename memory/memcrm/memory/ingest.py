"""Ingestion: validate, interpret and durably store interactions, idempotently.

Three steps so the service can batch the encoder pass across concurrent requests:
``screen`` (validation, PII policy, idempotency look-up), the interpreter's ``analyze``
(batched by the caller), and ``store`` (one transaction for the request, then the hot state:
idempotency entries and the customers' profile states, best effort).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import IngestOutcome, Interaction, Memory, TraceRef
from memcrm.core.validation import check_interaction
from memcrm.interpret.pipeline import Analysis, Interpreter, Screened
from memcrm.memory.hot import HotState, KnownVersion
from memcrm.memory.profile import Profiles
from memcrm.memory.store import (
    MemoryStore,
    NewMemory,
    Stored,
    enrichment_from_json,
    enrichment_to_json,
)


def content_sha256(it: Interaction) -> bytes:
    """Identity of an interaction's content as stored: what makes a re-send a duplicate.

    Computed after PII redaction, so no derivative of a redacted value is kept.
    """
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


@dataclass
class Screening:
    """A request after the cheap step: answers known so far and what still needs the model."""

    tenant_id: str
    outcomes: list[IngestOutcome | None]
    pending: list[tuple[int, Screened, bytes]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [s.model_text for _, s, _ in self.pending]


class Ingestor:
    def __init__(self, store: MemoryStore, hot: HotState, interpreter: Interpreter) -> None:
        self._store = store
        self._hot = hot
        self._profiles = Profiles(store, hot)
        self.interpreter = interpreter

    def screen(
        self,
        tenant_id: str,
        interactions: Sequence[Interaction | InvalidArgument],
        *,
        now: datetime | None = None,
        field_prefix: str = "interactions",
    ) -> Screening:
        """Validate each input (inputs that failed translation arrive as their error), apply the
        tenant's PII policy and answer known duplicates from the hot state."""
        now = now or datetime.now(UTC)
        screening = Screening(tenant_id, [None] * len(interactions))
        candidates: list[tuple[int, Screened, bytes]] = []
        for i, item in enumerate(interactions):
            if isinstance(item, InvalidArgument):
                screening.outcomes[i] = IngestOutcome("", error=item.message)
                continue
            try:
                check_interaction(item, f"{field_prefix}[{i}]", now)
            except InvalidArgument as exc:
                screening.outcomes[i] = IngestOutcome(item.interaction_id, error=exc.message)
                continue
            screened = self.interpreter.screen(tenant_id, item)
            candidates.append((i, screened, content_sha256(screened.interaction)))

        ids = [s.interaction.interaction_id for _, s, _ in candidates]
        known = self._hot.known(tenant_id, ids)
        for i, screened, digest in candidates:
            interaction_id = screened.interaction.interaction_id
            hit = known.get(interaction_id)
            if hit is not None and hit.content_sha256 == digest:
                enrichment = enrichment_from_json(json.loads(hit.enrichment_json))
                screening.outcomes[i] = IngestOutcome(
                    interaction_id, hit.memory_id, True, enrichment
                )
            else:
                screening.pending.append((i, screened, digest))
        return screening

    def store(
        self, screening: Screening, analyses: Sequence[Analysis], trace: TraceRef
    ) -> list[IngestOutcome]:
        """Store what is pending in one transaction; one outcome per input, in order."""
        outcomes = list(screening.outcomes)
        if screening.pending:
            screened = [s for _, s, _ in screening.pending]
            understood = self.interpreter.understand(screening.tenant_id, screened, analyses)
            stored = self._store.ingest(
                screening.tenant_id,
                [
                    NewMemory(s.interaction, digest, u.embedding, u.enrichment, trace)
                    for (_, s, digest), u in zip(screening.pending, understood, strict=True)
                ],
            )
            self._hot.remember(screening.tenant_id, _latest(stored))
            self._profiles.on_stored(
                screening.tenant_id,
                [
                    Memory(
                        r.memory_id,
                        s.interaction,
                        r.enrichment,
                        r.recorded_at or datetime.now(UTC),
                        trace,
                        r.version,
                        r.near_duplicate_of,
                    )
                    for (_, s, _), r in zip(screening.pending, stored, strict=True)
                    if not r.duplicate
                ],
            )
            for (i, s, _), result in zip(screening.pending, stored, strict=True):
                outcomes[i] = IngestOutcome(
                    s.interaction.interaction_id,
                    result.memory_id,
                    result.duplicate,
                    result.enrichment,
                )
        return [o for o in outcomes if o is not None]

    def ingest(
        self,
        tenant_id: str,
        interactions: Sequence[Interaction | InvalidArgument],
        trace: TraceRef,
        *,
        now: datetime | None = None,
        field_prefix: str = "interactions",
    ) -> list[IngestOutcome]:
        """All three steps for one request, unbatched."""
        screening = self.screen(tenant_id, interactions, now=now, field_prefix=field_prefix)
        analyses = self.interpreter.analyze(screening.texts, self.interpreter.intent_set(tenant_id))
        return self.store(screening, analyses, trace)


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
