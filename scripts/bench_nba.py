"""NextBestAction speed beside the Echo RPC (not a test): latency at one client, throughput at
several, against a running memcrm.

First ingests ``--customers`` x ``--per-customer`` real airline tweets (default 50 x 40) through
IngestBatch, with fresh ids every run: each customer writes to one airline, with distinct tweets
to it in their original order, spread over the last 30 days (so recency still counts) and
deduplicated, so every decision can recall up to 32 memories. Then it measures, in
``--rounds`` rounds that alternate the order (Echo first, then NBA first, ...) so that a change
in the machine's load hits both alike:

- NextBestAction with explanations (``top_n`` 3, a real tweet to the customer's airline that
  was not ingested as ``context``, a random bench customer): latency at 1 client, and
  throughput (decisions/s) at ``--clients`` concurrent clients, each on its own connection;
- ``DiagnosticsService.Echo``, the same path (gRPC proxy, gateway, API key, server span) without
  memcrm's work: the same two figures, as the baseline.

During the throughput phases it also reads every process's CPU time from ``/proc`` (Linux) and
reports milliseconds of CPU per call by role: each Serve replica, the gRPC proxy, PostgreSQL,
Redis, the bench client and ``other processes`` (other jobs on a shared machine; when they are
large the figures were measured on a busy machine).

Prints one JSON document: both sets of figures, their ratios, the targets (p50 <= 30 ms,
p99 <= 80 ms, >= 50 decisions/s) and whether each is met, and how many memories the decisions
recalled (each explanation lists the memories it played).

    .venv/bin/python scripts/bench_nba.py --address 127.0.0.1:50051 --api-key memcrm-dev
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.v1 import (
    common_pb2,
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

TARGETS = {"p50_ms": 30.0, "p99_ms": 80.0, "decisions_per_s": 50.0}
HISTORY_DAYS = 30
INGEST_BATCH = 100


def log(message: str) -> None:
    print(f"[bench_nba {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_summary(samples: list[float]) -> dict[str, float | int]:
    return {
        "p50_ms": round(percentile(samples, 0.50), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "mean_ms": round(statistics.fmean(samples), 2),
        "max_ms": round(max(samples), 2),
        "n": len(samples),
    }


def default_tweets() -> Path:
    from memcrm.models.enrichment_data import default_data_dir

    return default_data_dir() / "airline-tweets" / "Tweets.csv"


# Data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    customer_id: str
    airline: str
    history: list[str]  # oldest first


@dataclass(frozen=True)
class Workload:
    customers: list[Customer]
    contexts: dict[str, list[str]]  # by airline: tweets to it that no customer remembers


def workload(path: Path, customers: int, per_customer: int, seed: int, run: str) -> Workload:
    """Bench customers made of real tweets; each tweet is used at most once in all."""
    frame = pd.read_csv(path).drop_duplicates("tweet_id")
    frame["text"] = frame["text"].astype(str).map(lambda t: " ".join(t.split()))
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("text")
    frame = frame.sort_values(["tweet_created", "tweet_id"])
    rng = random.Random(seed)
    pools = {
        airline: group["text"].tolist() for airline, group in frame.groupby("airline", sort=True)
    }
    for texts in pools.values():
        rng.shuffle(texts)
    order = {text: i for i, text in enumerate(frame["text"])}
    airlines = sorted(pools)
    weights = [len(pools[a]) for a in airlines]
    made = []
    for k in range(customers):
        candidates = [a for a in airlines if len(pools[a]) > per_customer + 1]
        if not candidates:
            raise SystemExit("not enough distinct tweets for that many customers")
        airline = rng.choices(candidates, [weights[airlines.index(a)] for a in candidates])[0]
        taken = pools[airline][:per_customer]
        del pools[airline][:per_customer]
        made.append(Customer(f"{run}-c{k:03d}", airline, sorted(taken, key=order.__getitem__)))
    contexts = {a: pools[a] for a in {c.airline for c in made}}
    return Workload(made, contexts)


def interactions(customer: Customer, now: datetime) -> list[common_pb2.Interaction]:
    start = now - timedelta(days=HISTORY_DAYS)
    step = timedelta(days=HISTORY_DAYS - 1) / max(1, len(customer.history))
    out = []
    for i, text in enumerate(customer.history):
        ts = Timestamp()
        ts.FromDatetime(start + i * step)
        out.append(
            common_pb2.Interaction(
                interaction_id=f"{customer.customer_id}-tw-{i}",
                customer_id=customer.customer_id,
                channel=common_pb2.CHANNEL_SOCIAL,
                direction=common_pb2.DIRECTION_INBOUND,
                occurred_at=ts,
                text=text,
                attributes={"airline": customer.airline},
            )
        )
    return out


def ingest(address: str, md: list[tuple[str, str]], work: Workload) -> dict[str, Any]:
    now = datetime.now(UTC)
    items = [it for c in work.customers for it in interactions(c, now)]
    batches = [items[i : i + INGEST_BATCH] for i in range(0, len(items), INGEST_BATCH)]
    with grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)

        def send(batch: list[common_pb2.Interaction]) -> list[str]:
            response = stub.IngestBatch(
                ingestion_pb2.IngestBatchRequest(interactions=batch), metadata=md, timeout=600
            )
            return [f"{r.interaction_id}: {r.error}" for r in response.results if r.error]

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            errors = [e for found in pool.map(send, batches) for e in found]
        seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} interactions were not stored, e.g. {errors[:3]}")
    return {"interactions": len(items), "seconds": round(seconds, 1)}


# Measurements -----------------------------------------------------------------------------


@dataclass
class Tally:
    """Distinct memories each decision's explanations list (they play the recalled memories)."""

    per_decision: list[int] = field(default_factory=list)
    per_explanation: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, response: recommendation_pb2.NextBestActionResponse) -> None:
        cited = {m.memory_id for a in response.actions for m in a.explanation.memories}
        with self.lock:
            self.per_decision.append(len(cited))
            self.per_explanation.extend(len(a.explanation.memories) for a in response.actions)


class Client:
    """One client: its own connection (a local subchannel pool), stubs and random stream."""

    def __init__(
        self, address: str, md: list[tuple[str, str]], work: Workload, top_n: int, seed: int
    ) -> None:
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._echo = diagnostics_pb2_grpc.DiagnosticsServiceStub(self._channel)
        self._nba = recommendation_pb2_grpc.RecommendationServiceStub(self._channel)
        self._md = md
        self._work = work
        self._top_n = top_n
        self._rng = random.Random(seed)

    def echo(self, tally: Tally) -> None:
        message = f"echo {self._rng.getrandbits(64):016x}"
        response = self._echo.Echo(
            diagnostics_pb2.EchoRequest(message=message), metadata=self._md, timeout=60
        )
        if response.message != message or len(response.trace_id) != 32:
            raise SystemExit(f"Echo answered {response!r} to {message!r}")

    def nba(self, tally: Tally) -> None:
        customer = self._rng.choice(self._work.customers)
        context = self._rng.choice(self._work.contexts[customer.airline])
        response = self._nba.NextBestAction(
            recommendation_pb2.NextBestActionRequest(
                customer_id=customer.customer_id, context=context, top_n=self._top_n
            ),
            metadata=self._md,
            timeout=120,
        )
        if not response.actions or any(not a.explanation.summary for a in response.actions):
            raise SystemExit(f"NextBestAction for {customer.customer_id} came back unexplained")
        tally.add(response)

    def close(self) -> None:
        self._channel.close()


Call = Callable[[Client, Tally], None]


def latencies(client: Client, call: Call, calls: int, tally: Tally) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call(client, tally)
        out.append((time.perf_counter() - started) * 1000)
    return out


class CpuMeter:
    """CPU time every process on this machine spent, grouped by role (``/proc``, Linux only):
    where a call's CPU goes when the service runs here, and how much other jobs took meanwhile
    (this machine is shared; a busy neighbour shows up as ``other processes``)."""

    ROLES = (
        ("ServeReplica:", lambda cmd: "replica " + cmd.split("ServeReplica:")[1].split()[0]),
        ("ProxyActor", lambda cmd: "ray proxy"),
        ("ray::", lambda cmd: "ray (other)"),
        ("/ray/", lambda cmd: "ray (other)"),
        ("postgres", lambda cmd: "postgresql"),
        ("redis-server", lambda cmd: "redis"),
    )

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self._tick = os.sysconf("SC_CLK_TCK") if self.available else 100
        self.totals: dict[str, float] = {}

    def _role(self, pid: int, cmd: str) -> str:
        if pid == os.getpid():
            return "bench client"
        for marker, name in self.ROLES:
            if marker in cmd:
                return name(cmd)
        return "other processes"

    def snapshot(self) -> dict[int, tuple[str, int]]:
        out: dict[int, tuple[str, int]] = {}
        if not self.available:
            return out
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            fields = stat.rsplit(")", 1)[1].split()
            name = cmd or stat.split("(", 1)[1].rsplit(")", 1)[0]
            pid = int(entry.name)
            out[pid] = (self._role(pid, name), int(fields[11]) + int(fields[12]))
        return out

    def add(self, before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> None:
        for pid, (role, ticks) in after.items():
            spent = ticks - before[pid][1] if pid in before else ticks
            self.totals[role] = self.totals.get(role, 0.0) + spent / self._tick

    def per_call_ms(self, calls: float) -> dict[str, float]:
        ranked = sorted(self.totals.items(), key=lambda kv: -kv[1])
        out = {role: round(1000 * s / calls, 2) for role, s in ranked if s > 0}
        service = sum(s for role, s in ranked if role not in ("other processes", "bench client"))
        out["service total"] = round(1000 * service / calls, 2)
        return out


def throughput(
    clients: list[Client], call: Call, seconds: float, tally: Tally, meter: CpuMeter | None = None
) -> tuple[int, float]:
    """Every client calls back to back until the deadline; completed calls and the time taken
    until the last one finished."""
    barrier = threading.Barrier(len(clients) + 1)
    deadline: list[float] = []

    def run(client: Client) -> int:
        barrier.wait()
        done = 0
        while time.perf_counter() < deadline[0]:
            call(client, tally)
            done += 1
        return done

    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(run, c) for c in clients]
        before = meter.snapshot() if meter else {}
        started = time.perf_counter()
        deadline.append(started + seconds)
        barrier.wait()
        done = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - started
        if meter:
            meter.add(before, meter.snapshot())
    return done, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default="memcrm-dev")
    parser.add_argument("--tweets", type=Path, default=None, help="default: MEMCRM_DATA_DIR's")
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--per-customer", type=int, default=40)
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--latency-calls", type=int, default=40, help="per RPC per round")
    parser.add_argument("--throughput-seconds", type=float, default=4.0, help="per RPC per round")
    parser.add_argument("--seed", type=int, default=7, help="which tweets and customers")
    args = parser.parse_args()

    load_before = os.getloadavg()
    md = [("authorization", f"Bearer {args.api_key}")]
    tweets = (args.tweets or default_tweets()).resolve()
    run = f"nba-{uuid.uuid4().hex[:8]}"
    work = workload(tweets, args.customers, args.per_customer, args.seed, run)
    log(f"ingesting {args.customers} x {args.per_customer} tweets as {run}-c*")
    ingested = ingest(args.address, md, work)
    log(f"ingested {ingested['interactions']} in {ingested['seconds']} s")

    single = Client(args.address, md, work, args.top_n, args.seed)
    crowd = [
        Client(args.address, md, work, args.top_n, args.seed + 1 + i) for i in range(args.clients)
    ]
    warm = Tally()
    for client in [single, *crowd]:  # every connection and both paths, once
        client.echo(warm)
        client.nba(warm)
    throughput(crowd, Client.nba, 1.0, warm)

    rpcs: dict[str, Call] = {"echo": Client.echo, "next_best_action": Client.nba}
    samples: dict[str, list[float]] = {name: [] for name in rpcs}
    rates: dict[str, list[dict[str, float]]] = {name: [] for name in rpcs}
    meters = {name: CpuMeter() for name in rpcs}
    tally = Tally()
    for r in range(args.rounds):
        order = list(rpcs) if r % 2 == 0 else list(reversed(rpcs))
        for name in order:
            samples[name] += latencies(single, rpcs[name], args.latency_calls, tally)
        for name in order:
            done, elapsed = throughput(
                crowd, rpcs[name], args.throughput_seconds, tally, meters[name]
            )
            rates[name].append({"calls": done, "seconds": round(elapsed, 3)})
        echo_rate, nba_rate = (rates[n][-1]["calls"] / rates[n][-1]["seconds"] for n in rpcs)
        log(
            f"round {r + 1}/{args.rounds}: p50 echo {percentile(samples['echo'], 0.5):.1f} ms, "
            f"nba {percentile(samples['next_best_action'], 0.5):.1f} ms; "
            f"{echo_rate:.0f} echo/s, {nba_rate:.1f} decisions/s"
        )
    for client in [single, *crowd]:
        client.close()

    def figures(name: str) -> dict[str, Any]:
        total = sum(x["calls"] for x in rates[name])
        seconds = sum(x["seconds"] for x in rates[name])
        per_round = [round(x["calls"] / x["seconds"], 1) for x in rates[name]]
        return {
            "latency_1_client": latency_summary(samples[name]),
            f"throughput_{args.clients}_clients": {
                "per_s": round(total / seconds, 1),
                "per_round_per_s": per_round,
                "calls": total,
                "cpu_ms_per_call": meters[name].per_call_ms(total)
                if meters[name].available
                else None,
            },
        }

    nba, echo = figures("next_best_action"), figures("echo")
    tp = f"throughput_{args.clients}_clients"
    nba_lat, echo_lat = nba["latency_1_client"], echo["latency_1_client"]
    values = {
        "p50_ms": nba_lat["p50_ms"],
        "p99_ms": nba_lat["p99_ms"],
        "decisions_per_s": nba[tp]["per_s"],
    }
    targets = {
        key: {
            "target": f"{'>=' if key == 'decisions_per_s' else '<='} {goal:g}",
            "value": values[key],
            "met": values[key] >= goal if key == "decisions_per_s" else values[key] <= goal,
        }
        for key, goal in TARGETS.items()
    }
    report = {
        "next_best_action": nba,
        "echo_baseline": echo,
        "ratios_nba_to_echo": {
            "p50": round(nba_lat["p50_ms"] / echo_lat["p50_ms"], 2),
            "p99": round(nba_lat["p99_ms"] / echo_lat["p99_ms"], 2),
            "throughput": round(nba[tp]["per_s"] / echo[tp]["per_s"], 4),
            "nba_p50_minus_echo_p50_ms": round(nba_lat["p50_ms"] - echo_lat["p50_ms"], 2),
        },
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "memories_recalled": {
            "mean_per_decision": round(statistics.fmean(tally.per_decision), 2),
            "min_per_decision": min(tally.per_decision),
            "max_per_decision": max(tally.per_decision),
            "mean_per_explanation": round(statistics.fmean(tally.per_explanation), 2),
            "decisions": len(tally.per_decision),
        },
        "setup": {
            "address": args.address,
            "run": run,
            "tweets": str(tweets),
            "customers": args.customers,
            "memories_per_customer": args.per_customer,
            "ingest": ingested,
            "top_n": args.top_n,
            "clients": args.clients,
            "rounds": args.rounds,
            "latency_calls_per_round": args.latency_calls,
            "throughput_seconds_per_round": args.throughput_seconds,
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
