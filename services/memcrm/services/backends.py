"""The domain deployment behind the gateway: ingestion.

A plain class, made a Ray Serve deployment in ``memcrm.services.app``. It holds the domain
ingestion service, receives and returns domain types (pickled by Ray), never protobuf, and
continues the caller's trace from a W3C carrier. Ingestion has a deployment of its own because
its work differs from everything else the gateway does: batches of texts through the encoder
(batched across requests, ``serve.batch``), on CPUs sized apart from the latency-bound RPCs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from ray import serve

from memcrm.core.errors import InvalidArgument
from memcrm.core.settings import Settings
from memcrm.core.tenants import TenantConfigs
from memcrm.core.tracing import child_span, configure_tracing, set_attributes
from memcrm.core.types import (
    IngestOutcome,
    Interaction,
    TraceRef,
)
from memcrm.decisions.predictions import CustomerPredictions, SignalWatcher, Trigger
from memcrm.interpret.pipeline import Analysis, Interpreter
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.signals import SignalState
from memcrm.memory.store import MemoryStore

log = logging.getLogger(__name__)


class IngestionDeployment:
    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        from memcrm.models.enrichment import EnrichmentModel

        configure_tracing("ingestion")
        tenants = TenantConfigs.load(settings.tenants_dir)
        model = EnrichmentModel(
            intents_dir=settings.intents_dir, workers=settings.ingestion_encoder_workers
        )
        for tenant in sorted(tenants.tenants):  # a missing intent set fails start-up, not ingest
            model.intent_labels(tenants.get(tenant).intents.set)
        interpreter = Interpreter(model, tenants)
        self._store = MemoryStore(database_url, max_size=settings.db_pool_max)
        self._ingestor = Ingestor(self._store, HotState(redis_url), interpreter)
        predictions = CustomerPredictions.configured(self._store, settings)
        self._signals = SignalWatcher(
            predictions, SignalState(redis_url, maxlen=settings.signals_stream_maxlen), tenants
        )

    async def ingest(
        self,
        tenant_id: str,
        items: Sequence[Interaction | InvalidArgument],
        trace: TraceRef,
        carrier: dict[str, str],
        field_prefix: str,
    ) -> list[IngestOutcome]:
        with child_span("memcrm.ingest", carrier, {"memcrm.items": len(items)}):
            screening = await asyncio.to_thread(
                self._ingestor.screen, tenant_id, items, field_prefix=field_prefix
            )
            analyses: list[Analysis] = []
            if screening.pending:
                intent_set = self._ingestor.interpreter.intent_set(tenant_id)
                analyses = await self._analyze((intent_set, screening.texts))
            outcomes = await asyncio.to_thread(self._ingestor.store, screening, analyses, trace)
            if any(o.memory_id and not o.duplicate for o in outcomes):
                await asyncio.to_thread(self._evaluate_signals, tenant_id, items, outcomes, trace)
            return outcomes

    def _evaluate_signals(
        self,
        tenant_id: str,
        items: Sequence[Interaction | InvalidArgument],
        outcomes: Sequence[IngestOutcome],
        trace: TraceRef,
    ) -> None:
        """Recompute the customers' predictions and publish crossings (WatchSignals).

        The memories are durably stored by now, and the answer must say so: a failure here is
        logged on the span and the log, never returned. The customers' stored scores stay as
        they were, so their next ingestion catches the crossing up.
        """
        with child_span("memcrm.signals") as span:
            try:
                triggers = signal_triggers(items, outcomes, trace)
                events = self._signals.after_ingest(tenant_id, triggers, datetime.now(UTC))
            except Exception as exc:
                log.warning("memcrm.signals: evaluation failed: %s", exc, exc_info=exc)
                set_attributes(span, {"memcrm.signals.failed": True})
                return
            set_attributes(
                span, {"memcrm.customers": len(triggers), "memcrm.signals.events": len(events)}
            )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def _analyze(self, requests: list[tuple[str, list[str]]]) -> list[list[Analysis]]:
        """One encoder pass over the texts of every request waiting now (cross-request batch)."""
        return await asyncio.to_thread(self._ingestor.interpreter.analyze_many, requests)


def signal_triggers(
    items: Sequence[Interaction | InvalidArgument],
    outcomes: Sequence[IngestOutcome],
    trace: TraceRef,
) -> dict[str, Trigger]:
    """Per customer, the newest interaction this request stored (duplicates move nothing)."""
    newest: dict[str, tuple[Interaction, IngestOutcome]] = {}
    for item, outcome in zip(items, outcomes, strict=True):
        if not isinstance(item, Interaction) or not outcome.memory_id or outcome.duplicate:
            continue
        seen = newest.get(item.customer_id)
        if seen is None or item.occurred_at >= seen[0].occurred_at:
            newest[item.customer_id] = (item, outcome)
    return {
        customer: Trigger(outcome.memory_id, item.interaction_id, trace)
        for customer, (item, outcome) in newest.items()
    }
