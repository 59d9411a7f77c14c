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

from ray import serve

from memcrm.core.errors import InvalidArgument
from memcrm.core.settings import Settings
from memcrm.core.tenants import TenantConfigs
from memcrm.core.tracing import child_span, configure_tracing
from memcrm.core.types import (
    DecisionRecord,
    DecisionRequest,
    IngestOutcome,
    Interaction,
    TraceRef,
)
from memcrm.decisions.record import decision_record
from memcrm.interpret.pipeline import Analysis, Interpreter
from memcrm.memory.decisions import DecisionStore
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.recall import MemoryReader
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
            return await asyncio.to_thread(self._ingestor.store, screening, analyses, trace)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def _analyze(self, requests: list[tuple[str, list[str]]]) -> list[list[Analysis]]:
        """One encoder pass over the texts of every request waiting now (cross-request batch)."""
        return await asyncio.to_thread(self._ingestor.interpreter.analyze_many, requests)


class RecommendationDeployment:
    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        from memcrm.decisions.catalog import BUILTIN_CATALOG
        from memcrm.decisions.recommender import Recommender
        from memcrm.models.encoder import Encoder
        from memcrm.models.nba import NbaScorer

        configure_tracing("recommendation")
        encoder = Encoder()
        store = MemoryStore(database_url, max_size=settings.db_pool_max)
        self._reader = MemoryReader(store, encoder)
        self._decisions = DecisionStore(store)
        scorer = NbaScorer(settings.nba_model_dir)
        self._recommender = Recommender(encoder, scorer, BUILTIN_CATALOG)
        self._memories = settings.decision_memories

    def decide(
        self,
        tenant_id: str,
        request: DecisionRequest,
        trace_id: str,
        carrier: dict[str, str],
    ) -> DecisionRecord:
        """Decide, write the full decision record, and only then answer with it."""
        decided_at = datetime.now(UTC)
        view = request.as_of or decided_at
        with child_span("memcrm.recall", carrier, {"memcrm.top_k": self._memories}):
            # One encoder pass: the context is both the recall query and a model input.
            context_vector = self._reader.embed_query(request.context)
            recalled = self._reader.recall_embedded(
                tenant_id,
                request.customer_id,
                context_vector,
                top_k=self._memories,
                as_of=view,
                query_text=request.context,
            )
        with child_span(
            "memcrm.decide",
            carrier,
            {"memcrm.memories": len(recalled)},
            links=[r.memory.ingest_trace for r in recalled],
        ):
            audit = self._recommender.decide_audited(
                recalled,
                request.context,
                request.channel,
                request.top_n,
                view,
                context_embedding=context_vector,
            )
        record = decision_record(request, audit, decided_at, view, trace_id)
        with child_span("memcrm.decision_record", carrier):
            self._decisions.save(tenant_id, record)
        return record
