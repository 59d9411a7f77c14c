"""The gRPC ingress: authenticate, open the server span, translate, delegate, map errors.

Ray Serve's gRPC proxy routes every RPC of API v1 here by method name (RPC names are unique
across services). Ingestion runs in a deployment of its own. Everything else runs here, in
worker threads, on the domain services: decisions, replays and model activations
(``memcrm.services.recommendations``), MemoryService reads (``MemoryReader``, ``Profiles``),
audit reads and outcomes. Recall and decisions are the latency-critical paths; a deployment
hop costs about 3.5 ms on them, and the service scales by gateway replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry.trace import Span
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle

from memcrm.core.auth import KeyRing, require
from memcrm.core.errors import InvalidArgument, ResourceExhausted
from memcrm.core.settings import Settings
from memcrm.core.tracing import (
    add_links,
    configure_tracing,
    current_carrier,
    server_span,
    set_attributes,
    trace_ref,
)
from memcrm.core.types import (
    CustomerProfile,
    DecisionRequest,
    Interaction,
    Principal,
)
from memcrm.core.validation import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TOP_N,
    MAX_BATCH,
    MAX_PAGE_SIZE,
    check_bounded,
    check_channel,
    check_id,
    check_interaction,
    check_text,
)
from memcrm.decisions.predictions import CustomerPredictions
from memcrm.decisions.replay import Replay
from memcrm.memory.decisions import DecisionStore
from memcrm.memory.hot import HotState
from memcrm.memory.profile import Profiles
from memcrm.memory.recall import MemoryReader
from memcrm.memory.signals import SignalFeed
from memcrm.memory.store import MemoryStore
from memcrm.services import convert
from memcrm.services.recommendations import Recommendations
from memcrm.services.status import to_status
from memcrm.v1 import (
    audit_pb2,
    diagnostics_pb2,
    ingestion_pb2,
    memory_pb2,
    models_pb2,
    recommendation_pb2,
    signals_pb2,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
MAX_TOP_N = 20


class Gateway:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        redis_url: str,
        ingestion: DeploymentHandle[Any],
    ) -> None:
        from memcrm.models.encoder import Encoder
        from memcrm.models.query_encoder import QueryEncoder

        configure_tracing("gateway")
        self._keys = KeyRing.configured(settings.api_keys_file, settings.api_keys)
        self._ingestion = ingestion
        # Recall and decisions encode one short text at a time: one torch thread (see Encoder),
        # the query encoder's fast path; one copy of the model for both.
        encoder = Encoder(threads=1)
        query_encoder = QueryEncoder(encoder, precision=settings.query_encoder_precision)
        self._recommendations = Recommendations(
            settings, database_url, redis_url, encoder, query_encoder
        )
        store = MemoryStore(database_url, max_size=settings.db_pool_max)
        self._reader = MemoryReader(store, query_encoder)
        self._profiles = Profiles(store, HotState(redis_url))
        self._decisions = DecisionStore(store)
        # Profiles carry explained predictions; WatchSignals streams their crossings.
        self._predictions = CustomerPredictions.configured(store, settings)
        self._feed = SignalFeed(redis_url)
        self._max_watchers = settings.signals_max_watchers
        self._stream_max_s = settings.signals_stream_max_s
        self._watchers = 0

    async def _serve(
        self,
        rpc: str,
        role: str,
        ctx: RayServegRPCContext,
        empty: type[M],
        work: Callable[[Principal, Span], Awaitable[M]],
    ) -> M:
        metadata = ctx.invocation_metadata()
        with server_span(rpc, metadata, {"rpc.system": "grpc", "rpc.method": rpc}) as span:
            trace_id = trace_ref(span).trace_id
            try:
                principal = self._keys.authenticate(metadata)
                require(principal, role)
                set_attributes(span, {"memcrm.tenant": principal.tenant_id})
                return await work(principal, span)
            except Exception as exc:
                code, details = to_status(exc, trace_id)
                set_attributes(span, {"rpc.grpc.status_code": code.value[0]})
                ctx.set_code(code)
                ctx.set_details(details)
                return empty()

    def _profile(self, tenant_id: str, customer_id: str, as_of: datetime | None) -> CustomerProfile:
        profile = self._profiles.get(tenant_id, customer_id, as_of=as_of)
        predictions = self._predictions.explained(tenant_id, customer_id, profile.as_of)
        return replace(profile, predictions=predictions)

    # IngestionService ---------------------------------------------------------------------

    async def Ingest(  # noqa: N802 - gRPC method names
        self, request: ingestion_pb2.IngestRequest, grpc_context: RayServegRPCContext
    ) -> ingestion_pb2.IngestResponse:
        async def work(p: Principal, span: Span) -> ingestion_pb2.IngestResponse:
            if not request.HasField("interaction"):
                raise InvalidArgument("interaction", "is required")
            item = convert.interaction(request.interaction, "interaction")
            # One item: its validation error is the call's error, field named.
            check_interaction(item, "interaction", datetime.now(UTC))
            outcome = (await self._ingest(p, [item], span, "interaction"))[0]
            if outcome.error:
                raise InvalidArgument("interaction", outcome.error)
            return convert.ingest_response(outcome, trace_ref(span).trace_id)

        return await self._serve(
            "memcrm.v1.IngestionService/Ingest",
            "writer",
            grpc_context,
            ingestion_pb2.IngestResponse,
            work,
        )

    async def IngestBatch(  # noqa: N802
        self, request: ingestion_pb2.IngestBatchRequest, grpc_context: RayServegRPCContext
    ) -> ingestion_pb2.IngestBatchResponse:
        async def work(p: Principal, span: Span) -> ingestion_pb2.IngestBatchResponse:
            if len(request.interactions) > MAX_BATCH:
                raise InvalidArgument("interactions", f"at most {MAX_BATCH} per batch")
            items: list[Interaction | InvalidArgument] = []
            for i, msg in enumerate(request.interactions):
                try:
                    items.append(convert.interaction(msg, f"interactions[{i}]"))
                except InvalidArgument as exc:
                    items.append(exc)
            outcomes = await self._ingest(p, items, span, "interactions")
            # Translation failures carry no id; answer with the caller's.
            results = [convert.ingest_result(o) for o in outcomes]
            for result, msg in zip(results, request.interactions, strict=True):
                result.interaction_id = result.interaction_id or msg.interaction_id
            set_attributes(span, {"memcrm.items": len(items)})
            return ingestion_pb2.IngestBatchResponse(
                results=results, trace_id=trace_ref(span).trace_id
            )

        return await self._serve(
            "memcrm.v1.IngestionService/IngestBatch",
            "writer",
            grpc_context,
            ingestion_pb2.IngestBatchResponse,
            work,
        )

    async def _ingest(
        self, p: Principal, items: list[Interaction | InvalidArgument], span: Span, prefix: str
    ) -> list[Any]:
        result: list[Any] = await self._ingestion.ingest.remote(
            p.tenant_id, items, trace_ref(span), current_carrier(), prefix
        )
        return result

    # MemoryService ------------------------------------------------------------------------

    async def Recall(  # noqa: N802
        self, request: memory_pb2.RecallRequest, grpc_context: RayServegRPCContext
    ) -> memory_pb2.RecallResponse:
        async def work(p: Principal, span: Span) -> memory_pb2.RecallResponse:
            as_of = convert.as_of(request)
            set_attributes(span, {"memcrm.customer_id": request.customer_id})
            recalled = await asyncio.to_thread(
                self._reader.recall,
                p.tenant_id,
                request.customer_id,
                request.query,
                top_k=request.top_k,
                as_of=as_of,
                channels=list(request.channels),
            )
            return memory_pb2.RecallResponse(
                memories=[convert.recalled_msg(r) for r in recalled],
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.MemoryService/Recall",
            "reader",
            grpc_context,
            memory_pb2.RecallResponse,
            work,
        )

    async def GetTimeline(  # noqa: N802
        self, request: memory_pb2.GetTimelineRequest, grpc_context: RayServegRPCContext
    ) -> memory_pb2.GetTimelineResponse:
        async def work(p: Principal, span: Span) -> memory_pb2.GetTimelineResponse:
            as_of = convert.as_of(request)
            set_attributes(span, {"memcrm.customer_id": request.customer_id})
            page = await asyncio.to_thread(
                self._reader.timeline,
                p.tenant_id,
                request.customer_id,
                page_size=request.page_size,
                page_token=request.page_token,
                as_of=as_of,
            )
            return memory_pb2.GetTimelineResponse(
                memories=[convert.memory_msg(m) for m in page.memories],
                next_page_token=page.next_page_token,
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.MemoryService/GetTimeline",
            "reader",
            grpc_context,
            memory_pb2.GetTimelineResponse,
            work,
        )

    async def GetCustomerProfile(  # noqa: N802
        self, request: memory_pb2.GetCustomerProfileRequest, grpc_context: RayServegRPCContext
    ) -> memory_pb2.GetCustomerProfileResponse:
        async def work(p: Principal, span: Span) -> memory_pb2.GetCustomerProfileResponse:
            as_of = convert.as_of(request)
            set_attributes(span, {"memcrm.customer_id": request.customer_id})
            profile = await asyncio.to_thread(
                self._profile, p.tenant_id, request.customer_id, as_of
            )
            return memory_pb2.GetCustomerProfileResponse(
                profile=convert.profile_msg(profile), trace_id=trace_ref(span).trace_id
            )

        return await self._serve(
            "memcrm.v1.MemoryService/GetCustomerProfile",
            "reader",
            grpc_context,
            memory_pb2.GetCustomerProfileResponse,
            work,
        )

    async def SearchMemories(  # noqa: N802
        self, request: memory_pb2.SearchMemoriesRequest, grpc_context: RayServegRPCContext
    ) -> memory_pb2.SearchMemoriesResponse:
        async def work(p: Principal, span: Span) -> memory_pb2.SearchMemoriesResponse:
            as_of = convert.as_of(request)
            after, before = convert.search_bounds(request)
            found = await asyncio.to_thread(
                self._reader.search,
                p.tenant_id,
                request.query,
                top_k=request.top_k,
                as_of=as_of,
                channels=list(request.channels),
                occurred_after=after,
                occurred_before=before,
                one_per_customer=request.one_per_customer,
            )
            set_attributes(span, {"memcrm.results": len(found)})
            return memory_pb2.SearchMemoriesResponse(
                memories=[convert.recalled_msg(r) for r in found],
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.MemoryService/SearchMemories",
            "reader",
            grpc_context,
            memory_pb2.SearchMemoriesResponse,
            work,
        )

    # RecommendationService ----------------------------------------------------------------

    async def NextBestAction(  # noqa: N802
        self, request: recommendation_pb2.NextBestActionRequest, grpc_context: RayServegRPCContext
    ) -> recommendation_pb2.NextBestActionResponse:
        async def work(p: Principal, span: Span) -> recommendation_pb2.NextBestActionResponse:
            check_id("customer_id", request.customer_id)
            check_text("context", request.context)
            channel = check_channel("channel", request.channel, required=False)
            top_n = check_bounded("top_n", request.top_n, DEFAULT_TOP_N, MAX_TOP_N)
            as_of = convert.as_of(request)
            set_attributes(span, {"memcrm.customer_id": request.customer_id})
            wanted = DecisionRequest(request.customer_id, request.context, channel, top_n, as_of)
            record, response = await self._recommendations.decide(
                p.tenant_id,
                wanted,
                trace_ref(span).trace_id,
                current_carrier(),
                convert.decision_msg,
            )
            cited = {
                a.memory_id: a.ingest_trace
                for action in record.actions
                for a in action.explanation.memories
            }
            add_links(span, cited.values())
            set_attributes(
                span,
                {
                    "memcrm.recommendation_id": record.recommendation_id,
                    "memcrm.model_version": record.model_version,
                    "memcrm.cited_memories": len(cited),
                },
            )
            return response

        return await self._serve(
            "memcrm.v1.RecommendationService/NextBestAction",
            "recommender",
            grpc_context,
            recommendation_pb2.NextBestActionResponse,
            work,
        )

    async def RecordOutcome(  # noqa: N802
        self, request: recommendation_pb2.RecordOutcomeRequest, grpc_context: RayServegRPCContext
    ) -> recommendation_pb2.RecordOutcomeResponse:
        async def work(p: Principal, span: Span) -> recommendation_pb2.RecordOutcomeResponse:
            outcome = convert.outcome(request.outcome)
            occurred_at = convert.optional_time(
                request.occurred_at, request.HasField("occurred_at"), "occurred_at"
            ) or datetime.now(UTC)
            set_attributes(span, {"memcrm.recommendation_id": request.recommendation_id})
            await asyncio.to_thread(
                self._decisions.record_outcome,
                p.tenant_id,
                request.recommendation_id,
                request.action_id,
                outcome,
                occurred_at,
            )
            return recommendation_pb2.RecordOutcomeResponse(trace_id=trace_ref(span).trace_id)

        return await self._serve(
            "memcrm.v1.RecommendationService/RecordOutcome",
            "recommender",
            grpc_context,
            recommendation_pb2.RecordOutcomeResponse,
            work,
        )

    # AuditService -------------------------------------------------------------------------

    async def GetRecommendation(  # noqa: N802
        self, request: audit_pb2.GetRecommendationRequest, grpc_context: RayServegRPCContext
    ) -> audit_pb2.GetRecommendationResponse:
        async def work(p: Principal, span: Span) -> audit_pb2.GetRecommendationResponse:
            record = await asyncio.to_thread(
                self._decisions.get, p.tenant_id, request.recommendation_id
            )
            return audit_pb2.GetRecommendationResponse(
                record=convert.record_msg(record), trace_id=trace_ref(span).trace_id
            )

        return await self._serve(
            "memcrm.v1.AuditService/GetRecommendation",
            "auditor",
            grpc_context,
            audit_pb2.GetRecommendationResponse,
            work,
        )

    async def ListRecommendations(  # noqa: N802
        self, request: audit_pb2.ListRecommendationsRequest, grpc_context: RayServegRPCContext
    ) -> audit_pb2.ListRecommendationsResponse:
        async def work(p: Principal, span: Span) -> audit_pb2.ListRecommendationsResponse:
            since, until = convert.record_bounds(request)
            size = check_bounded("page_size", request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            page = await asyncio.to_thread(
                self._decisions.for_customer,
                p.tenant_id,
                request.customer_id,
                since=since,
                until=until,
                page_size=size,
                page_token=request.page_token,
            )
            return audit_pb2.ListRecommendationsResponse(
                records=[convert.record_msg(r) for r in page.records],
                next_page_token=page.next_page_token,
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.AuditService/ListRecommendations",
            "auditor",
            grpc_context,
            audit_pb2.ListRecommendationsResponse,
            work,
        )

    async def ReplayRecommendation(  # noqa: N802
        self, request: audit_pb2.ReplayRecommendationRequest, grpc_context: RayServegRPCContext
    ) -> audit_pb2.ReplayRecommendationResponse:
        async def work(p: Principal, span: Span) -> audit_pb2.ReplayRecommendationResponse:
            check_id("recommendation_id", request.recommendation_id)
            set_attributes(span, {"memcrm.recommendation_id": request.recommendation_id})
            replay: Replay = await self._recommendations.replay(
                p.tenant_id, request.recommendation_id, current_carrier()
            )
            set_attributes(span, {"memcrm.replay.identical": replay.identical})
            return audit_pb2.ReplayRecommendationResponse(
                identical=replay.identical, diff=replay.diff, trace_id=trace_ref(span).trace_id
            )

        return await self._serve(
            "memcrm.v1.AuditService/ReplayRecommendation",
            "auditor",
            grpc_context,
            audit_pb2.ReplayRecommendationResponse,
            work,
        )

    # ModelService ---------------------------------------------------------------------------

    async def ListModels(  # noqa: N802
        self, request: models_pb2.ListModelsRequest, grpc_context: RayServegRPCContext
    ) -> models_pb2.ListModelsResponse:
        async def work(p: Principal, span: Span) -> models_pb2.ListModelsResponse:
            entries, active = await self._recommendations.models(p.tenant_id)
            return models_pb2.ListModelsResponse(
                models=[convert.model_version_msg(e) for e in entries],
                active_version=active,
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.ModelService/ListModels",
            "admin",
            grpc_context,
            models_pb2.ListModelsResponse,
            work,
        )

    async def ActivateModel(  # noqa: N802
        self, request: models_pb2.ActivateModelRequest, grpc_context: RayServegRPCContext
    ) -> models_pb2.ActivateModelResponse:
        async def work(p: Principal, span: Span) -> models_pb2.ActivateModelResponse:
            check_text("version", request.version)
            activation, previous = await self._recommendations.activate(
                p.tenant_id, request.version, p.key_id
            )
            set_attributes(
                span,
                {"memcrm.model_version": activation.version, "memcrm.previous_version": previous},
            )
            return models_pb2.ActivateModelResponse(
                version=activation.version,
                previous_version=previous,
                activated_at=convert.timestamp(activation.activated_at),
                trace_id=trace_ref(span).trace_id,
            )

        return await self._serve(
            "memcrm.v1.ModelService/ActivateModel",
            "admin",
            grpc_context,
            models_pb2.ActivateModelResponse,
            work,
        )

    # DiagnosticsService -------------------------------------------------------------------

    async def Echo(  # noqa: N802
        self, request: diagnostics_pb2.EchoRequest, grpc_context: RayServegRPCContext
    ) -> diagnostics_pb2.EchoResponse:
        """No memcrm work, the whole path of every RPC: the baseline of latency benchmarks."""

        async def work(p: Principal, span: Span) -> diagnostics_pb2.EchoResponse:
            message = check_text("message", request.message)
            return diagnostics_pb2.EchoResponse(message=message, trace_id=trace_ref(span).trace_id)

        return await self._serve(
            "memcrm.v1.DiagnosticsService/Echo",
            "reader",
            grpc_context,
            diagnostics_pb2.EchoResponse,
            work,
        )

    # SignalService ------------------------------------------------------------------------

    async def WatchSignals(  # noqa: N802
        self, request: signals_pb2.WatchSignalsRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[signals_pb2.WatchSignalsResponse]:
        """A server stream: the span covers subscribing (authentication, validation, cursor),
        not the hours a stream may stay open; each event carries its ingestion's trace."""
        rpc = "memcrm.v1.SignalService/WatchSignals"
        metadata = grpc_context.invocation_metadata()
        with server_span(rpc, metadata, {"rpc.system": "grpc", "rpc.method": rpc}) as span:
            trace_id = trace_ref(span).trace_id
            try:
                principal = self._keys.authenticate(metadata)
                require(principal, "reader")
                set_attributes(span, {"memcrm.tenant": principal.tenant_id})
                wanted = convert.signal_filter(request)
                if self._watchers >= self._max_watchers:
                    raise ResourceExhausted(
                        f"this replica already serves {self._max_watchers} WatchSignals streams "
                        "(MEMCRM_SIGNALS_MAX_WATCHERS)"
                    )
                after = request.after or await self._feed.last_id(principal.tenant_id)
            except Exception as exc:
                code, details = to_status(exc, trace_id)
                set_attributes(span, {"rpc.grpc.status_code": code.value[0]})
                _end_stream(grpc_context, code, details)
        self._watchers += 1
        until = time.monotonic() + self._stream_max_s
        try:
            async for event in self._feed.events(principal.tenant_id, after, until=until):
                if wanted.matches(event):
                    yield convert.signal_msg(event)
        except Exception as exc:  # Redis gone mid-stream: end it with a status, not a traceback
            code, details = to_status(exc, trace_id)
            _end_stream(grpc_context, code, details)
        finally:
            self._watchers -= 1


class StreamEnded(Exception):
    """Ends a server stream with the status set on its context.

    Ray Serve's proxy applies a streaming method's context only together with a yielded
    message; a stream that fails before its first message must raise after setting the code,
    and the proxy then answers with that code and details (never the exception's text).
    """


def _end_stream(ctx: RayServegRPCContext, code: grpc.StatusCode, details: str) -> NoReturn:
    ctx.set_code(code)
    ctx.set_details(details)
    raise StreamEnded(details)
