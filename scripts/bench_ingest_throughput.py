"""Ingestion throughput through gRPC IngestBatch beside the bare encoder, in the same run.

Sends real airline tweets to a running memcrm as IngestBatch calls from several concurrent
clients (so Serve's cross-request batching has something to batch), then encodes the same texts
with the bare all-MiniLM-L6-v2 encoder in this process, and prints both rates and their ratio.
Each run uses fresh interaction ids, so nothing is answered from the idempotency cache.

    .venv/bin/python scripts/bench_ingest_throughput.py --address 127.0.0.1:50051 --texts 2000
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

DEFAULT_TWEETS = Path(__file__).resolve().parents[1] / "../shared/data/airline-tweets/Tweets.csv"


def interactions(texts: list[str], run: str) -> list[common_pb2.Interaction]:
    start = datetime.now(UTC) - timedelta(days=2)
    out = []
    for i, text in enumerate(texts):
        ts = Timestamp()
        ts.FromDatetime(start + timedelta(seconds=i))
        out.append(
            common_pb2.Interaction(
                interaction_id=f"{run}-{i}",
                customer_id=f"{run}-c{i % 97}",
                channel=common_pb2.CHANNEL_SOCIAL,
                direction=common_pb2.DIRECTION_INBOUND,
                occurred_at=ts,
                text=text,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default="memcrm-dev")
    parser.add_argument("--tweets", type=Path, default=DEFAULT_TWEETS)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="interactions per IngestBatch")
    parser.add_argument("--clients", type=int, default=4, help="concurrent IngestBatch callers")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tweets = pd.read_csv(args.tweets).drop_duplicates("tweet_id")["text"].astype(str).tolist()
    texts = tweets[: args.texts]
    run = f"bench-{uuid.uuid4().hex[:8]}"
    items = interactions(texts, run)
    batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]

    md = [("authorization", f"Bearer {args.api_key}")]
    channel = grpc.insecure_channel(args.address)
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    warm = interactions(texts[:8], f"{run}-warm")
    stub.IngestBatch(ingestion_pb2.IngestBatchRequest(interactions=warm), metadata=md)

    def send(batch: list[common_pb2.Interaction]) -> int:
        response = stub.IngestBatch(
            ingestion_pb2.IngestBatchRequest(interactions=batch), metadata=md, timeout=600
        )
        return sum(1 for r in response.results if not r.error and not r.duplicate)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from memcrm.models.encoder import Encoder

    encoder = Encoder()
    encoder.encode(texts[:8])

    # Alternate the two measurements so a change in the machine's load hits both alike.
    rounds = []
    for r in range(args.rounds):
        round_batches = [
            interactions([b.text for b in batch], f"{run}-r{r}-{i}")
            for i, batch in enumerate(batches)
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            stored = sum(pool.map(send, round_batches))
        grpc_rate = stored / (time.perf_counter() - started)
        # The bare encoder at its best: with one and with every torch thread (a Ray replica
        # with a CPU fraction runs one), keeping the faster.
        bare_rate = 0.0
        for threads in (1, os.cpu_count() or 1):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            encoder.encode(texts)
            bare_rate = max(bare_rate, len(texts) / (time.perf_counter() - started))
        rounds.append(
            {
                "ingest_batch_per_s": round(grpc_rate, 1),
                "bare_encoder_per_s": round(bare_rate, 1),
                "ratio": round(grpc_rate / bare_rate, 3),
            }
        )

    ratios = sorted(x["ratio"] for x in rounds)
    print(
        json.dumps(
            {
                "texts_per_round": len(texts),
                "batch": args.batch,
                "clients": args.clients,
                "rounds": rounds,
                "median_ratio": ratios[len(ratios) // 2],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
