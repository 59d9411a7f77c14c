"""A small typed client for the memcrm v1 gRPC services, carrying the API key as metadata."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    signals_pb2,
    signals_pb2_grpc,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_API_KEY = "memcrm-dev"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def default_address() -> str:
    """``$MEMCRM_GRPC_HOST:$MEMCRM_GRPC_PORT``, each defaulting to 127.0.0.1 and 50051."""
    host = os.environ.get("MEMCRM_GRPC_HOST") or DEFAULT_HOST
    port = os.environ.get("MEMCRM_GRPC_PORT") or str(DEFAULT_PORT)
    return f"{host}:{port}"


class MemcrmClient:
    """The Ingestion, Memory and Recommendation services behind one channel.

    Every call sends ``authorization: Bearer <api key>`` and uses ``timeout`` seconds as its
    deadline. Server errors surface as ``grpc.RpcError``.
    """

    def __init__(self, channel: grpc.Channel, api_key: str, timeout: float | None = None) -> None:
        self._channel = channel
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout
        self._ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        self._memory = memory_pb2_grpc.MemoryServiceStub(channel)
        self._recommendation = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        self._signals = signals_pb2_grpc.SignalServiceStub(channel)

    @classmethod
    def connect(cls, address: str, api_key: str, timeout: float | None = None) -> Self:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        return cls(grpc.insecure_channel(address, options=options), api_key, timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def ingest(self, interaction: common_pb2.Interaction) -> ingestion_pb2.IngestResponse:
        request = ingestion_pb2.IngestRequest(interaction=interaction)
        response: ingestion_pb2.IngestResponse = self._ingestion.Ingest(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response

    def ingest_batch(
        self, interactions: Sequence[common_pb2.Interaction]
    ) -> ingestion_pb2.IngestBatchResponse:
        request = ingestion_pb2.IngestBatchRequest(interactions=interactions)
        response: ingestion_pb2.IngestBatchResponse = self._ingestion.IngestBatch(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response

    def recall(
        self,
        customer_id: str,
        query: str = "",
        *,
        top_k: int = 0,
        channels: Sequence[common_pb2.Channel.ValueType] = (),
        as_of: Timestamp | None = None,
    ) -> memory_pb2.RecallResponse:
        request = memory_pb2.RecallRequest(
            customer_id=customer_id, query=query, top_k=top_k, channels=channels, as_of=as_of
        )
        response: memory_pb2.RecallResponse = self._memory.Recall(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response

    def timeline(
        self,
        customer_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        as_of: Timestamp | None = None,
    ) -> memory_pb2.GetTimelineResponse:
        request = memory_pb2.GetTimelineRequest(
            customer_id=customer_id, page_size=page_size, page_token=page_token, as_of=as_of
        )
        response: memory_pb2.GetTimelineResponse = self._memory.GetTimeline(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response

    def timeline_pages(
        self,
        customer_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        as_of: Timestamp | None = None,
    ) -> Iterator[memory_pb2.GetTimelineResponse]:
        """Every page from page_token on, following next_page_token."""
        seen: set[str] = set()
        while True:
            page = self.timeline(
                customer_id, page_size=page_size, page_token=page_token, as_of=as_of
            )
            yield page
            page_token = page.next_page_token
            if not page_token or page_token in seen:
                return
            seen.add(page_token)

    def next_best_action(
        self,
        customer_id: str,
        *,
        context: str = "",
        channel: common_pb2.Channel.ValueType = common_pb2.CHANNEL_UNSPECIFIED,
        top_n: int = 0,
        as_of: Timestamp | None = None,
    ) -> recommendation_pb2.NextBestActionResponse:
        request = recommendation_pb2.NextBestActionRequest(
            customer_id=customer_id, context=context, channel=channel, top_n=top_n, as_of=as_of
        )
        call = self._recommendation.NextBestAction
        response: recommendation_pb2.NextBestActionResponse = call(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response

    def watch_signals(
        self,
        *,
        after: str,
        names: Sequence[str] = (),
        customer_ids: Sequence[str] = (),
        rising_only: bool = False,
    ) -> Iterator[signals_pb2.WatchSignalsResponse]:
        """Every event after the cursor ``after``, for as long as the caller iterates.

        The server ends each stream after its lifetime; this reconnects after the last event
        seen (or the starting cursor), so nothing is missed or repeated. No deadline applies.
        """
        cursor = after
        while True:
            request = signals_pb2.WatchSignalsRequest(
                names=names, customer_ids=customer_ids, after=cursor, rising_only=rising_only
            )
            for event in self._signals.WatchSignals(request, metadata=self._metadata):
                cursor = event.event_id
                yield event
