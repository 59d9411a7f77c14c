"""Enrichment features of the NBA model: read from ``Enrichment``, optional in the manifest.

An artifact without enrichment features (every model trained before they existed, and any
tenant fine-tune of one) must load and score exactly as before; removing a memory must still
remove all of it, enrichment included.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from memcrm.core.types import (
    EMBEDDING_DIM,
    Channel,
    Direction,
    Enrichment,
    Entity,
    Interaction,
    Label,
    Memory,
    RecalledMemory,
    ScoreParts,
    TraceRef,
)
from memcrm.decisions.catalog import BUILTIN_CATALOG, catalog_fingerprint
from memcrm.models import nba_enrichment
from memcrm.models.nba import (
    ArtifactIntegrityError,
    MemoryFeatures,
    NbaScorer,
    write_artifact,
)
from memcrm.models.nba_net import (
    ENRICHMENT_FEATURES,
    N_ENRICHMENT_FEATURES,
    EnrichmentSpec,
    NbaHyperParams,
    NbaNet,
    age_features,
    enrichment_vector,
)

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
COLUMN = {name: i for i, name in enumerate(ENRICHMENT_FEATURES)}


def _enrichment(**kwargs: Any) -> Enrichment:
    base = Enrichment(
        model_version="test",
        sentiment=Label("negative", 0.9),
        sentiment_score=-0.8,
        issue=Label("Lost Luggage", 0.7),
        importance=0.6,
        intents=(Label("lost_or_stolen_card", 0.5),),
        topics=("Lost Luggage",),
    )
    return replace(base, **kwargs)


def _recalled(i: int, enrichment: Enrichment, rng: np.random.Generator) -> RecalledMemory:
    vector = rng.normal(size=EMBEDDING_DIM).astype(np.float32)
    interaction = Interaction(
        interaction_id=f"i{i}",
        customer_id="c1",
        channel=Channel.VOICE if i % 2 else Channel.SOCIAL,
        occurred_at=NOW - timedelta(days=3 * i + 1),
        direction=Direction.INBOUND,
        text=f"text {i}",
    )
    memory = Memory(
        memory_id=f"m{i}",
        interaction=interaction,
        enrichment=enrichment,
        recorded_at=NOW,
        ingest_trace=TraceRef("0" * 32, "0" * 16),
    )
    return RecalledMemory(memory, 1.0, ScoreParts(1.0), vector / np.linalg.norm(vector))


def _memories(n: int, seed: int, enriched: bool = True) -> MemoryFeatures:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    enrichment = rng.random((n, N_ENRICHMENT_FEATURES)).astype(np.float32)
    return MemoryFeatures(
        embeddings=vectors,
        ages_days=rng.uniform(0, 120, size=n),
        channels=rng.choice([int(c) for c in Channel], size=n).astype(np.int64),
        directions=rng.choice([int(d) for d in Direction], size=n).astype(np.int64),
        **({"enrichment": enrichment} if enriched else {}),
    )


def _manifest(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": f"{name}-{{sha}}",
        "encoder": "all-MiniLM-L6-v2",
        "catalog": [{"action_id": a.action_id} for a in BUILTIN_CATALOG],
        "catalog_fingerprint": catalog_fingerprint(BUILTIN_CATALOG),
        "hyperparameters": NbaHyperParams().to_dict(),
    }


def _net(seed: int, enrichment: EnrichmentSpec | None = None, hidden: int = 64) -> NbaNet:
    torch.manual_seed(seed)
    action_text = torch.randn(len(BUILTIN_CATALOG), EMBEDDING_DIM)
    return NbaNet(action_text, NbaHyperParams(hidden=hidden), enrichment=enrichment).eval()


# --- the features -----------------------------------------------------------------------------


def test_enrichment_features_are_read_from_the_enrichment() -> None:
    row = enrichment_vector(_enrichment())
    assert len(row) == N_ENRICHMENT_FEATURES
    expected = {
        "enriched": 1.0,
        "sentiment:negative": 0.9,
        "sentiment_score": -0.8,
        "issue:Lost Luggage": 0.7,
        "importance": 0.6,
    }
    for name, value in zip(ENRICHMENT_FEATURES, row, strict=True):
        assert value == pytest.approx(expected.get(name, 0.0)), name
    positive = enrichment_vector(_enrichment(sentiment=Label("positive", 0.8), issue=None))
    assert positive[COLUMN["sentiment:positive"]] == pytest.approx(0.8)
    assert positive[COLUMN["sentiment:negative"]] == 0.0
    assert all(positive[COLUMN[f"issue:{n}"]] == 0.0 for n in ("Lost Luggage", "other"))
    # An issue label outside the shipped head's list goes to issue:other.
    foreign = enrichment_vector(_enrichment(issue=Label("Card Declined", 0.5)))
    assert foreign[COLUMN["issue:other"]] == pytest.approx(0.5)
    assert sum(foreign[COLUMN[f"issue:{n}"]] for n in ("Lost Luggage", "Bad Flight")) == 0.0
    # Not interpreted: all zeros ("not known"), whatever else the record holds.
    assert enrichment_vector(None) == [0.0] * N_ENRICHMENT_FEATURES
    unknown = enrichment_vector(_enrichment(sentiment=None))
    assert unknown == [0.0] * N_ENRICHMENT_FEATURES
    # Out-of-range numbers are clipped to their documented ranges.
    clipped = enrichment_vector(_enrichment(importance=1.7, sentiment_score=-3.0))
    assert clipped[COLUMN["importance"]] == 1.0 and clipped[COLUMN["sentiment_score"]] == -1.0


def test_memory_features_from_recalled_carry_each_memorys_enrichment() -> None:
    rng = np.random.default_rng(0)
    enrichments = [
        _enrichment(),
        _enrichment(sentiment=Label("neutral", 0.6), sentiment_score=0.1, issue=None),
        Enrichment(model_version=""),  # stored without interpretation
    ]
    recalled = [_recalled(i, e, rng) for i, e in enumerate(enrichments)]
    features = MemoryFeatures.from_recalled(recalled, NOW)
    assert features.enrichment.shape == (3, N_ENRICHMENT_FEATURES)
    assert features.enrichment.dtype == np.float32
    for row, enrichment in zip(features.enrichment, enrichments, strict=True):
        np.testing.assert_allclose(row, enrichment_vector(enrichment), rtol=1e-6)
    np.testing.assert_array_equal(
        features.channels, [int(Channel.SOCIAL), int(Channel.VOICE), int(Channel.SOCIAL)]
    )
    assert MemoryFeatures.empty().enrichment.shape == (0, N_ENRICHMENT_FEATURES)


def test_memory_features_without_enrichment_mean_not_known() -> None:
    plain = _memories(4, seed=1, enriched=False)
    np.testing.assert_array_equal(plain.enrichment, np.zeros((4, N_ENRICHMENT_FEATURES)))
    with pytest.raises(ValueError, match="enrichment must be"):
        MemoryFeatures(
            embeddings=plain.embeddings,
            ages_days=plain.ages_days,
            channels=plain.channels,
            directions=plain.directions,
            enrichment=np.zeros((3, N_ENRICHMENT_FEATURES), np.float32),
        )


def test_importance_follows_the_interactions_channel_and_direction() -> None:
    base = _enrichment(entities=(Entity("$40", "money", 0, 3),), objections=())
    voice = nba_enrichment.with_importance(base, Channel.VOICE, Direction.INBOUND)
    social = nba_enrichment.with_importance(base, Channel.SOCIAL, Direction.INBOUND)
    outbound = nba_enrichment.with_importance(base, Channel.SOCIAL, Direction.OUTBOUND)
    assert voice.importance > social.importance > outbound.importance > 0.0
    assert outbound.importance == pytest.approx(social.importance / 2, abs=1e-6)
    assert replace(voice, importance=base.importance) == base


# --- the network and the artifact -------------------------------------------------------------


def test_an_artifact_without_enrichment_features_loads_and_scores_as_before(
    tmp_path: Path,
) -> None:
    net = _net(3)
    assert net.enrichment_spec is None and net.enrichment_proj is None
    assert not any(key.startswith("enrichment") for key in net.state_dict())
    manifest = write_artifact(net, tmp_path, _manifest("old"))
    assert "enrichment" not in manifest
    scorer = NbaScorer(tmp_path, name="nba")
    assert scorer.enrichment_spec is None
    enriched = _memories(5, seed=2)
    plain = replace(enriched, enrichment=np.zeros_like(enriched.enrichment))
    context = enriched.embeddings[0]
    served = scorer.logits(enriched, context)
    # Enrichment is ignored: it is not an input of this network.
    assert np.array_equal(served, scorer.logits(plain, context))
    # ... and the output is the pre-enrichment network's, computed here by hand.
    with torch.no_grad():
        n = net.double()
        x = torch.cat(
            [
                n.text_proj(torch.from_numpy(enriched.embeddings).double()),
                age_features(torch.from_numpy(enriched.ages_days)),
                n.channel_emb(torch.from_numpy(enriched.channels)),
                n.direction_emb(torch.from_numpy(enriched.directions)),
            ],
            dim=-1,
        )
        pooled = n.memory_mlp(x).sum(dim=0, keepdim=True)
        ctx = n.encode_context(torch.from_numpy(context).double()).unsqueeze(0)
        expected = n.score(pooled, ctx)[0].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-12)
    coalitions = np.random.default_rng(3).random((20, 6)) < 0.5
    np.testing.assert_array_equal(
        scorer.score_coalitions(enriched, context, coalitions),
        scorer.score_coalitions(plain, context, coalitions),
    )


def test_an_artifact_with_enrichment_features_declares_and_reads_them(tmp_path: Path) -> None:
    spec = EnrichmentSpec(dropout=0.2)
    assert EnrichmentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    net = _net(4, spec, hidden=80)
    manifest = write_artifact(net, tmp_path, _manifest("new"))
    assert manifest["enrichment"] == {"features": list(ENRICHMENT_FEATURES), "dropout": 0.2}
    scorer = NbaScorer(tmp_path)
    assert scorer.enrichment_spec == spec and scorer.net.hp.hidden == 80
    memories = _memories(4, seed=5)
    unknown = replace(memories, enrichment=np.zeros_like(memories.enrichment))
    assert not np.allclose(scorer.logits(memories, None), scorer.logits(unknown, None))
    # None in the network = all zeros = not known.
    with torch.no_grad():
        args = (
            torch.from_numpy(memories.embeddings).double(),
            torch.from_numpy(memories.ages_days),
            torch.from_numpy(memories.channels),
            torch.from_numpy(memories.directions),
        )
        torch.testing.assert_close(
            scorer.net.encode_memories(*args),
            scorer.net.encode_memories(*args, torch.zeros(4, N_ENRICHMENT_FEATURES).double()),
        )
    batched = scorer.forward_batch(
        memories.embeddings[None],
        memories.ages_days[None],
        memories.channels[None],
        memories.directions[None],
        np.ones((1, 4), bool),
        np.zeros((1, EMBEDDING_DIM), np.float32),
        np.zeros(1, bool),
        enrichment=memories.enrichment[None],
    )
    np.testing.assert_allclose(batched[0], scorer.logits(memories, None), atol=1e-10)


def test_an_artifact_reading_other_enrichment_features_is_refused(tmp_path: Path) -> None:
    write_artifact(_net(5, EnrichmentSpec()), tmp_path, _manifest("new"))
    path = tmp_path / "nba.json"
    manifest = json.loads(path.read_text())
    manifest["enrichment"]["features"] = [*ENRICHMENT_FEATURES[:-1], "urgency"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="enrichment features"):
        NbaScorer(tmp_path)


def test_enrichment_dropout_only_acts_in_training() -> None:
    net = _net(6, EnrichmentSpec(dropout=0.5))
    memories = _memories(6, seed=7)
    args = (
        torch.from_numpy(memories.embeddings),
        torch.from_numpy(memories.ages_days).float(),
        torch.from_numpy(memories.channels),
        torch.from_numpy(memories.directions),
        torch.from_numpy(memories.enrichment),
    )
    with torch.no_grad():
        first, again = net.encode_memories(*args), net.encode_memories(*args)
        assert torch.equal(first, again)
        net.train()
        net.text_dropout.p = 0.0
        torch.manual_seed(0)
        dropped = net.encode_memories(*args)
    # Some memories lost their enrichment in training (and only those changed).
    changed = ~torch.isclose(dropped, first).all(dim=-1)
    assert 0 < int(changed.sum()) < 6
    with pytest.raises(ValueError, match="enrichment must be"):
        net.eval().encode_memories(*args[:4], torch.zeros(6, 3))


def test_removing_a_memory_removes_its_enrichment_too(tmp_path: Path) -> None:
    write_artifact(_net(8, EnrichmentSpec()), tmp_path, _manifest("new"))
    scorer = NbaScorer(tmp_path)
    full = _memories(6, seed=9)
    keep = np.array([True, False, True, True, False, True])
    reduced = MemoryFeatures(
        embeddings=full.embeddings[keep],
        ages_days=full.ages_days[keep],
        channels=full.channels[keep],
        directions=full.directions[keep],
        enrichment=full.enrichment[keep],
    )
    context = full.embeddings[1]
    coalition = np.append(keep, True)[None, :]
    np.testing.assert_allclose(
        scorer.score_coalitions(full, context, coalition)[0],
        scorer.logits(reduced, context),
        atol=1e-10,
    )
    # Every memory absent is the empty set, whatever the memories' enrichment.
    nothing = np.zeros((1, 7), dtype=bool)
    np.testing.assert_allclose(
        scorer.score_coalitions(full, None, nothing)[0],
        scorer.logits(MemoryFeatures.empty(), None),
        atol=1e-12,
    )


# --- the per-tweet cache ----------------------------------------------------------------------


class _FakeModel:
    """Stands in for EnrichmentModel in the cache tests (the real one is tested elsewhere)."""

    version = "fake-1"


def test_the_cache_is_keyed_written_once_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_enrich(texts: list[str], model: Any = None) -> list[Enrichment]:
        calls.append(list(texts))
        return [
            _enrichment(
                sentiment_score=0.1 * i + 1 / 3,
                entities=(Entity("secret text", "money", 0, 11),),
            )
            for i, _ in enumerate(texts)
        ]

    monkeypatch.setattr(nba_enrichment, "enrich_texts", fake_enrich)
    ids, texts = [30, 10, 20], ["c", "a", "b"]
    logs: list[str] = []
    first, described = nba_enrichment.cached_enrichments(
        ids, texts, "sha-1", cache_dir=tmp_path, model=_FakeModel(), log=logs.append
    )
    assert calls == [["a", "b", "c"]]  # sorted by tweet id: independent of the input order
    assert not described["from_cache"] and described["tweets_enriched"] == 3
    second, again = nba_enrichment.cached_enrichments(
        list(reversed(ids)), list(reversed(texts)), "sha-1", cache_dir=tmp_path, model=_FakeModel()
    )
    assert len(calls) == 1 and again["from_cache"] and again["cache_key"] == described["cache_key"]
    assert second == list(reversed(first))
    assert first[1].sentiment_score == 1 / 3  # tweet 10 came first: exact float round trip
    assert first[0].entities[0].type == "money" and first[0].entities[0].text == ""
    assert "secret text" not in next(tmp_path.glob("*.json")).read_text()
    # Another data file or model version is another cache entry.
    nba_enrichment.cached_enrichments(ids, texts, "sha-2", cache_dir=tmp_path, model=_FakeModel())
    assert len(calls) == 2 and len(list(tmp_path.glob("*.json"))) == 2
