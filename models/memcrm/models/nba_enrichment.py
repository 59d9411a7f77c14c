"""What the served memories of simulated customers would carry: each tweet's ``Enrichment``.

Serving reads a memory's enrichment (``nba.MemoryFeatures.from_recalled``), so the trainer and
the evaluation give every simulated interaction the enrichment ingestion would have stored for
its text: the shipped ``EnrichmentModel`` (one encoder pass, sentiment / intent / issue heads)
and the interpretation pipeline (``memcrm.interpret.pipeline.Interpreter``: PII screening,
entities, objections, importance) with the default tenant configuration, exactly as
``memcrm.memory.ingest`` runs them. The enrichment heads were trained on the non-held-out
airline tweets only, with the simulator's ``split_of``: held-out customers get honest
enrichment, training customers in-sample enrichment (see ``memcrm.models.train_nba``).

Importance depends on the interaction's channel and direction, which the simulator draws per
interaction, not per tweet: a tweet's enrichment is computed once (as an inbound message on an
unspecified channel) and :func:`with_importance` recomputes importance with the pipeline's own
rule for each simulated interaction.

Cache (training only): ``<cache dir>/<key>.json`` with ``key`` = sha256 of the enrichment
model's version, the data file's sha256, the sorted tweet ids, the pipeline code and
``CACHE_FORMAT``. Default directory ``$XDG_CACHE_HOME/memcrm/nba-enrichment`` (else
``~/.cache/...``): outside the repository. A run with a cold cache computes the file, writes it
and then reads it back like a warm run, so both train on the very same numbers. Entity texts
(substrings of the tweets) are not kept: only their types matter downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memcrm.core.types import Channel, Direction, Enrichment, Entity, Interaction, Label
from memcrm.interpret.importance import importance

CACHE_FORMAT = 1
TENANT = "nba-simulator"  # any id: every tenant without a file gets the default configuration


def enrichment_validation_tweet(tweet_id: int) -> bool:
    """Whether the enrichment trainer kept this tweet for validation (``enrichment_data``: a
    training-split tweet with sha256 ``enrich-val:<tweet_id>`` mod 10 == 0): its enrichment is
    as honest as a held-out tweet's, since the heads never trained on it."""
    digest = hashlib.sha256(f"enrich-val:{tweet_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10 == 0


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memcrm" / "nba-enrichment"


def _pipeline_fingerprint() -> str:
    """The source of the code that turns a text into an ``Enrichment`` (cache invalidation)."""
    import memcrm.interpret.entities as entities
    import memcrm.interpret.objections as objections
    import memcrm.interpret.pii as pii
    import memcrm.interpret.pipeline as pipeline
    import memcrm.models.enrichment as enrichment

    digest = hashlib.sha256()
    for module in (enrichment, pipeline, objections, entities, pii):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def enrich_texts(texts: Sequence[str], model: Any = None) -> list[Enrichment]:
    """Each text's enrichment as ingestion stores it (default tenant configuration), for an
    inbound message on an unspecified channel. ``model``: an ``EnrichmentModel`` (default: the
    shipped one)."""
    from memcrm.core.tenants import TenantConfigs
    from memcrm.interpret.pipeline import Interpreter
    from memcrm.models.enrichment import EnrichmentModel

    if not texts:
        return []
    interpreter = Interpreter(model or EnrichmentModel(), TenantConfigs.load(None))
    moment = datetime(2015, 2, 24, tzinfo=UTC)
    screened = [
        interpreter.screen(
            TENANT,
            Interaction(
                interaction_id=f"t{i}",
                customer_id="sim",
                channel=Channel.UNSPECIFIED,
                occurred_at=moment,
                direction=Direction.INBOUND,
                text=text,
            ),
        )
        for i, text in enumerate(texts)
    ]
    return [u.enrichment for u in interpreter.interpret(TENANT, screened)]


def with_importance(enrichment: Enrichment, channel: Channel, direction: Direction) -> Enrichment:
    """The enrichment of the same text arriving on ``channel`` in ``direction``: importance
    is the pipeline's rule (``memcrm.interpret.importance``) for them, nothing else changes."""
    value = importance(
        sentiment=enrichment.sentiment,
        issue=enrichment.issue,
        objections=enrichment.objections,
        entities=enrichment.entities,
        channel=channel,
        direction=direction,
    )
    return replace(enrichment, importance=value)


def _label(x: Label | None) -> list[Any] | None:
    return None if x is None else [x.name, x.confidence]


def _to_json(e: Enrichment) -> dict[str, Any]:
    return {
        "model_version": e.model_version,
        "sentiment": _label(e.sentiment),
        "sentiment_score": e.sentiment_score,
        "issue": _label(e.issue),
        "intents": [_label(x) for x in e.intents],
        "objections": [_label(x) for x in e.objections],
        "entity_types": [x.type for x in e.entities],
        "topics": list(e.topics),
        "importance": e.importance,
    }


def _from_json(raw: dict[str, Any]) -> Enrichment:
    def label(x: list[Any] | None) -> Label | None:
        return None if x is None else Label(str(x[0]), float(x[1]))

    def labels(xs: list[list[Any]]) -> tuple[Label, ...]:
        return tuple(Label(str(x[0]), float(x[1])) for x in xs)

    return Enrichment(
        model_version=str(raw["model_version"]),
        sentiment=label(raw["sentiment"]),
        sentiment_score=float(raw["sentiment_score"]),
        issue=label(raw["issue"]),
        intents=labels(raw["intents"]),
        objections=labels(raw["objections"]),
        entities=tuple(Entity("", str(t), 0, 0) for t in raw["entity_types"]),
        topics=tuple(str(t) for t in raw["topics"]),
        importance=float(raw["importance"]),
    )


def cached_enrichments(
    tweet_ids: Sequence[int],
    texts: Sequence[str],
    data_sha256: str,
    *,
    cache_dir: Path | None = None,
    model: Any = None,
    log: Any = print,
) -> tuple[list[Enrichment], dict[str, Any]]:
    """The enrichment of every text (``texts[i]`` is tweet ``tweet_ids[i]``), from the cache
    when it holds this exact set for this model and data, else computed and cached.

    Returns the enrichments in input order and a description for the manifest.
    """
    from memcrm.models.enrichment import EnrichmentModel

    if len(tweet_ids) != len(texts):
        raise ValueError("one tweet id per text")
    started = time.perf_counter()
    model = model or EnrichmentModel()
    version = str(model.version)
    ids = sorted({int(t) for t in tweet_ids})
    key_source = json.dumps(
        {
            "format": CACHE_FORMAT,
            "model_version": version,
            "data_sha256": data_sha256,
            "pipeline_sha256": _pipeline_fingerprint(),
            "tweet_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    directory = cache_dir or default_cache_dir()
    path = directory / f"{key}.json"
    hit = path.is_file()
    if not hit:
        text_of = dict(zip((int(t) for t in tweet_ids), texts, strict=True))
        computed = enrich_texts([text_of[t] for t in ids], model)
        payload = {
            "key": json.loads(key_source),
            "tweets": {str(t): _to_json(e) for t, e in zip(ids, computed, strict=True)},
        }
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(payload), encoding="utf-8")
        partial.replace(path)  # atomic: a concurrent reader sees all of it or nothing
    # Warm and cold runs both read the file, so they use bit-identical numbers.
    stored = json.loads(path.read_text(encoding="utf-8"))["tweets"]
    enrichments = [_from_json(stored[str(int(t))]) for t in tweet_ids]
    seconds = time.perf_counter() - started
    log(
        f"enrichment of {len(ids)} tweets {'from cache' if hit else 'computed'} "
        f"({path}) in {seconds:.1f}s"
    )
    return enrichments, {
        "enrichment_model": version,
        "pipeline": "memcrm.interpret.pipeline.Interpreter, default tenant configuration; "
        "importance recomputed per interaction for its channel and direction",
        "tweets_enriched": len(ids),
        "cache_key": key,
        "from_cache": hit,
    }
