"""LoCoMo long-term conversational memory through memcrm's real gRPC API, beside BM25 and
dense-only baselines computed in the same run over the same turn texts and questions.

    python -m memcrm.evals.eval_memory [--data-dir DIR] [--address HOST:PORT --api-key KEY]

Each conversation of ``<data dir>/locomo-dev`` is one customer and each turn one chat
interaction (see ``memcrm.evals.locomo``), stored with ``IngestBatch``; each question of
categories 1-4 is one ``Recall`` (top_k 10) for its customer, timed on the client. Without
``--address`` the run starts its own service exactly as the end-to-end tests do (embedded
PostgreSQL and Redis in a fresh temporary folder, migrations, Ray Serve on free ports) and
stops all of it at the end, also on an error, Ctrl-C or SIGTERM.

Progress goes to stderr; stdout carries one JSON document and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from memcrm.evals.baselines import Bm25Ranker, DenseRanker
from memcrm.evals.locomo import (
    CATEGORIES,
    EXACT,
    MALFORMED,
    NO_SUCH_TURN,
    NORMALISED,
    SKIPPED_CATEGORIES,
    Conversation,
    InteractionRecord,
    interaction_records,
    load_conversations,
)
from memcrm.evals.metrics import Ranked, percentile, recall_table

log = logging.getLogger("memcrm.evals")

TOP_K = 10
KS = (5, 10)
MAX_BATCH = 500  # IngestBatch's limit
TARGET_RECALL_AT_10 = 0.70
TARGET_MARGIN_OVER_BEST_BASELINE = 0.12
TARGET_P50_MS = 25.0
DEV_API_KEY = "memcrm-dev"
LOCOMO_FOLDER = "locomo-dev"
RPC_TIMEOUT_S = 900.0


# --- the pieces of the report that are plain arithmetic -------------------------------------


def evidence_report(conversations: Sequence[Conversation], max_listed: int = 50) -> dict[str, Any]:
    """Counts of evidence references by outcome over the evaluated questions, and every quirk
    listed (up to ``max_listed``): each reference that was rewritten or could not be resolved,
    and each question left unscored for want of evidence."""
    outcomes = dict.fromkeys((EXACT, NORMALISED, NO_SUCH_TURN, MALFORMED), 0)
    listed: list[dict[str, Any]] = []
    partial = unscorable = 0
    for conv in conversations:
        for q in conv.questions:
            if not q.evaluated:
                continue
            for ref in q.evidence.refs:
                outcomes[ref.outcome] += 1
                if ref.outcome != EXACT:
                    listed.append(
                        {
                            "conversation": conv.name,
                            "question_index": q.index,
                            "raw": ref.raw,
                            "resolved_to": ref.canonical,
                            "outcome": ref.outcome,
                        }
                    )
            if not q.scorable:
                unscorable += 1
                listed.append(
                    {
                        "conversation": conv.name,
                        "question_index": q.index,
                        "raw": [r.raw for r in q.evidence.refs],
                        "resolved_to": None,
                        "outcome": (
                            "question_not_scored_no_evidence_given"
                            if not q.evidence.refs
                            else "question_not_scored_no_evidence_resolved"
                        ),
                    }
                )
            elif q.evidence.unresolved:
                partial += 1
    return {
        "references_by_outcome": outcomes,
        "questions_scored_on_part_of_their_evidence": partial,
        "questions_without_resolvable_evidence_not_scored": unscorable,
        "rule": (
            "ids split on ';' or ',' and made canonical D<session>:<turn>; an id naming no turn "
            "or text that is no id is reported, never guessed; recall@k counts a question's "
            "resolved turns; questions with none are asked but not scored"
        ),
        "quirks": listed[:max_listed],
        "quirks_not_listed": max(0, len(listed) - max_listed),
    }


def counts_report(conversations: Sequence[Conversation]) -> dict[str, Any]:
    questions = [q for c in conversations for q in c.questions]
    evaluated = [q for q in questions if q.evaluated]
    per_category: dict[str, int] = {}
    scored: dict[str, int] = {}
    for q in evaluated:
        per_category[q.category_name] = per_category.get(q.category_name, 0) + 1
        if q.scorable:
            scored[q.category_name] = scored.get(q.category_name, 0) + 1
    return {
        "conversations": len(conversations),
        "sessions": sum(c.sessions for c in conversations),
        "session_dates_without_turns": sum(c.dated_sessions_without_turns for c in conversations),
        "sessions_starting_before_the_previous": sum(
            c.sessions_out_of_order() for c in conversations
        ),
        "turns": sum(len(c.turns) for c in conversations),
        "turns_with_photo_caption": sum(t.has_photo for c in conversations for t in c.turns),
        "questions_in_files": len(questions),
        "questions_skipped": {
            CATEGORIES.get(cat, str(cat)): sum(1 for q in questions if q.category == cat)
            for cat in sorted(SKIPPED_CATEGORIES)
        },
        "questions_asked": len(evaluated),
        "questions_asked_per_category": dict(sorted(per_category.items())),
        "questions_scored": sum(scored.values()),
        "questions_scored_per_category": dict(sorted(scored.items())),
    }


def targets_report(
    memcrm_recall_at_10: float, baseline_recall_at_10: dict[str, float], p50_ms: float
) -> dict[str, Any]:
    best_name = max(baseline_recall_at_10, key=lambda n: baseline_recall_at_10[n])
    best = baseline_recall_at_10[best_name]
    required = max(TARGET_RECALL_AT_10, best + TARGET_MARGIN_OVER_BEST_BASELINE)
    checks = {
        "recall_at_10_at_least_0.70": memcrm_recall_at_10 >= TARGET_RECALL_AT_10,
        "recall_at_10_beats_best_baseline_by_0.12": (
            memcrm_recall_at_10 >= best + TARGET_MARGIN_OVER_BEST_BASELINE
        ),
        "recall_p50_below_25_ms": p50_ms < TARGET_P50_MS,
    }
    return {
        "recall_at_10_min": TARGET_RECALL_AT_10,
        "margin_over_best_baseline": TARGET_MARGIN_OVER_BEST_BASELINE,
        "best_baseline": best_name,
        "best_baseline_recall_at_10": best,
        "required_recall_at_10": round(required, 4),
        "recall_p50_ms_max": TARGET_P50_MS,
        "checks": checks,
    }


# --- the baselines ----------------------------------------------------------------------------


def run_baselines(
    conversations: Sequence[Conversation],
) -> tuple[dict[str, list[Ranked]], dict[str, Any]]:
    """BM25 and dense cosine over each conversation's turn texts, for its scored questions;
    also the settings they ran with."""
    from memcrm.models.encoder import Encoder

    encoder = Encoder()
    out: dict[str, list[Ranked]] = {"bm25": [], "dense": []}
    settings: dict[str, Any] = {"dense": {"encoder": encoder.name, "similarity": "exact cosine"}}
    for conv in conversations:
        texts = [t.text for t in conv.turns]
        ids = [t.dia_id for t in conv.turns]
        questions = [q for q in conv.questions if q.scorable]
        log.info("baselines: conversation %s (%d turns)", conv.name, len(texts))
        bm25 = Bm25Ranker(texts)
        settings["bm25"] = bm25.settings
        dense = DenseRanker(encoder, texts)
        dense_ranks = dense.rank_many([q.question for q in questions], TOP_K)
        for q, dense_rank in zip(questions, dense_ranks, strict=True):
            relevant = q.evidence.turn_ids
            bm25_rank = bm25.rank(q.question, TOP_K)
            out["bm25"].append(Ranked(q.category_name, relevant, tuple(ids[i] for i in bm25_rank)))
            out["dense"].append(
                Ranked(q.category_name, relevant, tuple(ids[i] for i in dense_rank))
            )
    return out, settings


# --- the gRPC driver ------------------------------------------------------------------------


@dataclass
class ServiceRun:
    ranked: list[Ranked] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    model_versions: set[str] = field(default_factory=set)
    ingested: int = 0
    duplicates: int = 0
    ingest_errors: list[dict[str, str]] = field(default_factory=list)
    ingest_seconds: float = 0.0
    returned_unknown_ids: int = 0


def _to_proto(record: InteractionRecord) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    from memcrm.v1 import common_pb2

    occurred = Timestamp()
    occurred.FromDatetime(record.occurred_at)
    return common_pb2.Interaction(
        interaction_id=record.interaction_id,
        customer_id=record.customer_id,
        channel=common_pb2.CHANNEL_CHAT,
        occurred_at=occurred,
        text=record.text,
        attributes=record.attributes,
    )


def drive_service(
    address: str,
    api_key: str,
    conversations: Sequence[Conversation],
    customers: dict[str, str],
    *,
    batch_size: int,
    warmup: int,
) -> ServiceRun:
    """Ingest every turn, warm the Recall path up, then ask and time every evaluated question."""
    import grpc

    from memcrm.v1 import ingestion_pb2, ingestion_pb2_grpc, memory_pb2, memory_pb2_grpc

    md = [("authorization", f"Bearer {api_key}")]
    run = ServiceRun()
    with grpc.insecure_channel(address) as channel:
        ingest = ingestion_pb2_grpc.IngestionServiceStub(channel)
        memory = memory_pb2_grpc.MemoryServiceStub(channel)
        to_dia: dict[str, str] = {}
        started = time.perf_counter()
        for conv in conversations:
            records = interaction_records(conv, customers[conv.name])
            to_dia.update({r.interaction_id: r.dia_id for r in records})
            for lo in range(0, len(records), batch_size):
                chunk = records[lo : lo + batch_size]
                request = ingestion_pb2.IngestBatchRequest(
                    interactions=[_to_proto(r) for r in chunk]
                )
                response = ingest.IngestBatch(request, metadata=md, timeout=RPC_TIMEOUT_S)
                for result in response.results:
                    if result.error:
                        run.ingest_errors.append(
                            {"interaction_id": result.interaction_id, "error": result.error}
                        )
                        continue
                    run.ingested += 1
                    run.duplicates += int(result.duplicate)
                    run.model_versions.add(result.enrichment.model_version)
                log.info(
                    "ingested conversation %s: %d/%d turns",
                    conv.name,
                    min(lo + batch_size, len(records)),
                    len(records),
                )
        run.ingest_seconds = time.perf_counter() - started
        if run.ingest_errors:
            log.warning("%d turns were not stored", len(run.ingest_errors))

        asked = [(c, q) for c in conversations for q in c.questions if q.evaluated]

        def recall(customer: str, query: str) -> Any:
            request = memory_pb2.RecallRequest(customer_id=customer, query=query, top_k=TOP_K)
            return memory.Recall(request, metadata=md, timeout=RPC_TIMEOUT_S)

        for conv, q in asked[:warmup]:  # not timed, not scored
            recall(customers[conv.name], q.question)
        log.info("recall: %d questions (after %d warm-up calls)", len(asked), warmup)
        for conv, q in asked:
            start = time.perf_counter()
            response = recall(customers[conv.name], q.question)
            run.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            ranked: list[str] = []
            for m in response.memories:
                iid = m.memory.interaction.interaction_id
                if iid not in to_dia:
                    run.returned_unknown_ids += 1
                ranked.append(to_dia.get(iid, iid))
            if q.scorable:
                run.ranked.append(Ranked(q.category_name, q.evidence.turn_ids, tuple(ranked)))
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def embedded_service() -> Iterator[tuple[str, dict[str, Any]]]:
    """The stores and Ray Serve exactly as tests/e2e start them, in a fresh temporary folder;
    everything is stopped and removed on the way out, whatever the way out is."""
    from memcrm.core.settings import load_settings
    from memcrm.memory.embedded import EmbeddedStores
    from memcrm.memory.migrate import migrate
    from memcrm.services.run import ServeRuntime

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # Unix socket paths must stay short: not under a deep TMPDIR.
    home = Path(tempfile.mkdtemp(prefix="memcrm-locomo-", dir="/tmp"))
    try:
        log.info("starting embedded PostgreSQL and Redis in %s", home)
        with EmbeddedStores(home, None, None) as stores:
            migrate(stores.database_url)
            settings = load_settings().model_copy(
                update={
                    "home": home,
                    "grpc_port": _free_port(),
                    "http_port": _free_port(),
                    "database_url": stores.database_url,
                    "redis_url": stores.redis_url,
                }
            )
            from memcrm.models.query_encoder import QueryEncoder

            runtime = ServeRuntime(settings, stores.database_url, stores.redis_url)
            log.info("starting Ray Serve on %s", runtime.address)
            try:
                runtime.start()
                # ray.init takes SIGTERM over; take it back so a stop still runs the cleanup.
                signal.signal(signal.SIGTERM, _raise_interrupt)
                yield (
                    runtime.address,
                    {
                        "gateway_replicas": settings.gateway_replicas,
                        "gateway_num_cpus": settings.gateway_num_cpus,
                        "ingestion_replicas": settings.ingestion_replicas,
                        "ingestion_num_cpus": settings.ingestion_num_cpus,
                        "query_encoder_precision": QueryEncoder.resolve(
                            settings.query_encoder_precision
                        ),
                    },
                )
            finally:
                log.info("stopping Ray Serve")
                runtime.stop()
                log.info("stopping the embedded stores")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def default_locomo_dir() -> Path:
    from memcrm.models.enrichment_data import default_data_dir

    return default_data_dir() / LOCOMO_FOLDER


def locomo_dir(given: Path) -> Path:
    """``given/locomo-dev`` when there is one, else ``given`` itself (the LoCoMo folder)."""
    nested = given / LOCOMO_FOLDER
    return nested if nested.is_dir() else given


def source_state(max_listed: int = 30) -> dict[str, Any]:
    """The checkout's commit and uncommitted paths: a result belongs to the code it ran."""
    import subprocess

    root = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "note": "not a git checkout"}
    return {
        "commit": commit,
        "uncommitted_paths": changed[:max_listed],
        "uncommitted_paths_not_listed": max(0, len(changed) - max_listed),
    }


def _json_stdout() -> IO[str]:
    """A private handle on the real stdout; fd 1 itself then points at stderr, so that nothing
    else (Ray, PostgreSQL, libraries, child processes) can write into the JSON stream."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


def build_report(
    conversations: Sequence[Conversation],
    data_dir: Path,
    run: ServiceRun,
    baselines: dict[str, list[Ranked]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    memcrm_table = recall_table(run.ranked, KS)
    tables = {name: recall_table(rows, KS) for name, rows in baselines.items()}
    p50 = percentile(run.latencies_ms, 0.50)
    latency = {
        "p50": round(p50, 2),
        "p99": round(percentile(run.latencies_ms, 0.99), 2),
        "mean": round(sum(run.latencies_ms) / len(run.latencies_ms), 2),
        "calls": len(run.latencies_ms),
        "measured": "client-side wall time per sequential Recall call, after warm-up",
    }
    targets = targets_report(
        memcrm_table["recall_at_10"]["overall"],
        {n: t["recall_at_10"]["overall"] for n, t in tables.items()},
        p50,
    )
    return {
        "benchmark": "LoCoMo evidence recall through memcrm's gRPC Recall",
        "data_dir": str(data_dir),
        "memcrm": {**memcrm_table, "recall_latency_ms": latency},
        "baselines": {
            "bm25": {**tables["bm25"], "what": "bm25s, English stop words, same turn texts"},
            "dense": {
                **tables["dense"],
                "what": "exact cosine with the same encoder over the same turn texts",
            },
        },
        "targets": targets,
        "meets_target": all(targets["checks"].values()),
        "counts": counts_report(conversations),
        "evidence": evidence_report(conversations),
        "ingest": {
            "stored": run.ingested,
            "duplicates": run.duplicates,
            "errors": len(run.ingest_errors),
            "error_examples": run.ingest_errors[:10],
            "seconds": round(run.ingest_seconds, 1),
            "recall_results_with_unknown_interaction_id": run.returned_unknown_ids,
        },
        "model_version": sorted(run.model_versions),
        "settings": settings,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m memcrm.evals.eval_memory",
        description="LoCoMo evidence recall through memcrm's gRPC API beside BM25 and dense.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"the data folder holding {LOCOMO_FOLDER}/, or that folder itself "
        "(default: MEMCRM_DATA_DIR)",
    )
    parser.add_argument("--address", help="a running memcrm (host:port); default: start one")
    parser.add_argument("--api-key", default=None, help=f"with --address (default {DEV_API_KEY})")
    parser.add_argument("--batch-size", type=int, default=MAX_BATCH, help="turns per IngestBatch")
    parser.add_argument("--warmup", type=int, default=5, help="untimed Recall calls first")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size must be 1..{MAX_BATCH}")
    if args.api_key and not args.address:
        parser.error("--api-key goes with --address")

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    log.setLevel(logging.INFO)
    out = _json_stdout()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    wall = time.perf_counter()

    data_dir = locomo_dir(args.data_dir) if args.data_dir else default_locomo_dir()
    try:
        conversations = load_conversations(data_dir)
    except (OSError, ValueError) as exc:
        print(f"eval_memory: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info(
        "loaded %d conversations, %d turns from %s",
        len(conversations),
        sum(len(c.turns) for c in conversations),
        data_dir,
    )
    run_id = uuid.uuid4().hex[:8]
    prefix = f"locomo-{run_id}-" if args.address else "locomo-"
    customers = {c.name: f"{prefix}{c.name}" for c in conversations}
    settings: dict[str, Any] = {
        "top_k": TOP_K,
        "ingest_batch_size": args.batch_size,
        "warmup_calls": args.warmup,
        "customer_id": f"{prefix}<conversation>",
        "interaction_id": "<customer_id>/<dia_id> (dia_id also in attributes.dia_id)",
        "text": "<speaker>: <text> [shares a photo: <blip_caption>]",
        "occurred_at": "session date (UTC) + turn index seconds",
        "channel": "CHANNEL_CHAT",
        "source": source_state(),
    }
    if args.address:
        settings["service"] = {"address": args.address, "run_id": run_id}
        run = drive_service(
            args.address,
            args.api_key or DEV_API_KEY,
            conversations,
            customers,
            batch_size=args.batch_size,
            warmup=args.warmup,
        )
    else:
        with embedded_service() as (address, service_settings):
            settings["service"] = {"embedded": True, **service_settings}
            run = drive_service(
                address,
                DEV_API_KEY,
                conversations,
                customers,
                batch_size=args.batch_size,
                warmup=args.warmup,
            )
    log.info("baselines in-process")
    baselines, settings["baselines"] = run_baselines(conversations)
    report = build_report(conversations, data_dir, run, baselines, settings)
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    out.write(json.dumps(report, indent=2) + "\n")
    out.flush()


def cli() -> None:
    """``main`` with a stop (Ctrl-C, SIGTERM) reported in one line once everything is down."""
    try:
        main()
    except KeyboardInterrupt:
        log.error("interrupted: the service and stores it started are stopped")
        raise SystemExit(130) from None


if __name__ == "__main__":
    cli()
