"""The domain deployments behind the gateway: ingestion and recommendation.

Plain classes, made Ray Serve deployments in ``memcrm.services.app``. Each holds a domain
service; they receive and return domain types (pickled by Ray), never protobuf, and continue
the caller's trace from a W3C carrier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ray import serve

from memcrm.core.errors import InvalidArgument
from memcrm.core.settings import Settings
from memcrm.core.tenants import TenantConfigs
from memcrm.core.tracing import child_span, configure_tracing, set_attributes
from memcrm.core.types import (
    DecisionRecord,
    DecisionRequest,
    IngestOutcome,
    Interaction,
    TraceRef,
)
from memcrm.decisions.predictions import CustomerPredictions, SignalWatcher, Trigger
from memcrm.decisions.replay import Replay
from memcrm.interpret.pipeline import Analysis, Interpreter
from memcrm.memory.activations import Activation
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.signals import SignalState
from memcrm.memory.store import MemoryStore

if TYPE_CHECKING:
    from memcrm.models.registry import ModelEntry

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


# Decisions one recommendation replica runs at once (see RecommendationDeployment).
DECISION_THREADS = 2
GIL_SWITCH_INTERVAL_S = 0.001


class RecommendationDeployment:
    """Decisions, their replays and model activations (``memcrm.decisions.service``).

    The methods are async and run the (blocking) domain calls on long-lived worker threads.
    A sync method would run on a worker thread that Ray Serve (through anyio) starts for the
    request and stops when the request ends: a new thread per decision costs ~4 ms of kernel
    CPU (page faults of its fresh stack and allocator arena), measured on this project's
    machine. Decisions get ``DECISION_THREADS`` threads of their own: in one process,
    concurrent decisions contend for the GIL and the caches (CPU per decision measured at
    23.4 ms one at a time, 24.6 ms two at a time, 26.5 ms four, 27-34 ms eight), and two
    already keep the CPU busy while one waits on PostgreSQL; further requests queue here.
    """

    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        import sys
        from concurrent.futures import ThreadPoolExecutor

        from memcrm.decisions.service import DecisionService
        from memcrm.models.encoder import Encoder
        from memcrm.models.query_encoder import QueryEncoder

        configure_tracing("recommendation")
        # A decision encodes one short message: one thread (see Encoder).
        encoder = Encoder(threads=1)
        store = MemoryStore(database_url, max_size=settings.db_pool_max)
        query_encoder = QueryEncoder(encoder, precision=settings.query_encoder_precision)
        self._service = DecisionService(
            settings, store, HotState(redis_url), encoder, query_encoder
        )
        self._deciders = ThreadPoolExecutor(DECISION_THREADS, thread_name_prefix="memcrm-decide")
        # A thread waiting for the GIL (a decision back from a torch op that released it) asks
        # for it after 1 ms instead of Python's 5: measured 24.5 -> 23.5 ms CPU per decision
        # and 4% more decisions/s with two deciding threads.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    async def decide(
        self, tenant_id: str, request: DecisionRequest, trace_id: str, carrier: dict[str, str]
    ) -> DecisionRecord:
        """Decide, write the full decision record, and only then answer with it."""
        return await asyncio.get_running_loop().run_in_executor(
            self._deciders, self._service.decide, tenant_id, request, trace_id, carrier
        )

    async def replay(
        self, tenant_id: str, recommendation_id: str, carrier: dict[str, str]
    ) -> Replay:
        return await asyncio.to_thread(self._service.replay, tenant_id, recommendation_id, carrier)

    async def models(self, tenant_id: str) -> tuple[list[ModelEntry], str]:
        return await asyncio.to_thread(self._service.models, tenant_id)

    async def activate(self, tenant_id: str, version: str, by: str) -> tuple[Activation, str]:
        return await asyncio.to_thread(self._service.activate, tenant_id, version, by)
