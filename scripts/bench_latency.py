"""Latency of Ingest, Recall and NextBestAction over sequential calls to a running memcrm.

Prints p50/p99 per RPC beside a baseline measured in the same run: Ray Serve's own Healthz RPC
through the same gRPC proxy (no memcrm code), so the ratios survive a noisy shared machine.

    .venv/bin/python scripts/bench_latency.py --address 127.0.0.1:50051 --calls 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
)

TEXTS = [
    "@united my bag never arrived in Houston and nobody answers the phone",
    "@united the crew on my flight to Denver were wonderful, thank you",
    "@united flight cancelled again, I need to be rebooked today",
    "@united how do I add a checked bag to my booking?",
    "@united still waiting for a call back about my lost luggage claim",
]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(calls: int, fn: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default="memcrm-dev")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    md = [("authorization", f"Bearer {args.api_key}")]
    channel = grpc.insecure_channel(args.address)
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channel)
    memory = memory_pb2_grpc.MemoryServiceStub(channel)
    recommend = recommendation_pb2_grpc.RecommendationServiceStub(channel)
    healthz = channel.unary_unary("/ray.serve.RayServeAPIService/Healthz", lambda b: b, lambda b: b)
    customer = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(days=30)

    def one_ingest(i: int) -> object:
        ts = Timestamp()
        ts.FromDatetime(t0 + timedelta(minutes=i))
        it = common_pb2.Interaction(
            interaction_id=f"{customer}-{i}",
            customer_id=customer,
            channel=common_pb2.CHANNEL_CHAT,
            direction=common_pb2.DIRECTION_INBOUND,
            occurred_at=ts,
            text=f"{TEXTS[i % len(TEXTS)]} (message {i})",
        )
        return ingest.Ingest(ingestion_pb2.IngestRequest(interaction=it), metadata=md)

    def one_recall(i: int) -> object:
        query = TEXTS[i % len(TEXTS)]
        return memory.Recall(
            memory_pb2.RecallRequest(customer_id=customer, query=query, top_k=10), metadata=md
        )

    def one_nba(i: int) -> object:
        request = recommendation_pb2.NextBestActionRequest(
            customer_id=customer, context=TEXTS[i % len(TEXTS)], top_n=3
        )
        return recommend.NextBestAction(request, metadata=md)

    for fn in (one_ingest, one_recall, one_nba):  # warm every path once
        fn(10_000)
    results = {
        "baseline_healthz": timed(args.calls, lambda i: healthz(b"")),
        "Ingest": timed(args.calls, one_ingest),
        "Recall": timed(args.calls, one_recall),
        "NextBestAction": timed(args.calls, one_nba),
    }
    base = statistics.median(results["baseline_healthz"])
    report = {
        name: {
            "p50_ms": round(percentile(s, 0.50), 2),
            "p99_ms": round(percentile(s, 0.99), 2),
            "p50_vs_baseline": round(percentile(s, 0.50) / base, 2),
        }
        for name, s in results.items()
    }
    report["setup"] = {"calls": args.calls, "memories_for_recall_and_nba": args.calls + 1}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
