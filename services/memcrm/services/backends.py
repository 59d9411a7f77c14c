"""The domain deployments behind the gateway: ingestion and recommendation.

Plain classes, made Ray Serve deployments in ``memcrm.services.app``. Each holds a domain
service; they receive and return domain types (pickled by Ray), never protobuf, and continue
the caller's trace from a W3C carrier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
from memcrm.decisions.replay import Replay
from memcrm.interpret.pipeline import Analysis, Interpreter
from memcrm.memory.activations import Activation
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
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
    """Decisions, their replays and model activations (``memcrm.decisions.service``)."""

    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
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

    def decide(
        self, tenant_id: str, request: DecisionRequest, trace_id: str, carrier: dict[str, str]
    ) -> DecisionRecord:
        """Decide, write the full decision record, and only then answer with it."""
        return self._service.decide(tenant_id, request, trace_id, carrier)

    def replay(self, tenant_id: str, recommendation_id: str, carrier: dict[str, str]) -> Replay:
        return self._service.replay(tenant_id, recommendation_id, carrier)

    def models(self, tenant_id: str) -> tuple[list[ModelEntry], str]:
        return self._service.models(tenant_id)

    def activate(self, tenant_id: str, version: str, by: str) -> tuple[Activation, str]:
        return self._service.activate(tenant_id, version, by)
