"""The customer-signal model: verified artifact, three explained probabilities, sensible
directions on real texts, each memory's enrichment read (declared in the manifest, packed by
train_signals and eval_signals as train_nba does, served from stored memories), artifacts
without enrichment still loading, and simulator signals that leave the NBA ground truth
untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from memcrm.core.types import (
    SIGNAL_NAMES,
    Channel,
    Direction,
    Enrichment,
    Interaction,
    Memory,
    RecalledMemory,
    ScoreParts,
    TraceRef,
)
from memcrm.decisions.predictions import Predictor
from memcrm.models import eval_signals, train_signals
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import EnrichmentModel
from memcrm.models.nba import (
    ArtifactIntegrityError,
    MemoryFeatures,
    NbaScorer,
    file_sha256,
    write_artifact,
)
from memcrm.models.nba import default_artifact_dir as artifact_dir
from memcrm.models.nba_enrichment import (
    enrich_texts,
    enrichment_validation_tweet,
    with_importance,
)
from memcrm.models.nba_net import ENRICHMENT_FEATURES, NbaHyperParams, NbaNet, enrichment_vector
from memcrm.models.signals import (
    SIGNAL_DEFINITIONS,
    SIGNALS_ARTIFACT,
    SignalPrediction,
    load_signal_scorer,
    predict_signals,
)
from memcrm.models.simulator import (
    SIGNAL_DRIVERS,
    JourneySimulator,
    SimCustomer,
    SimulatorConfig,
    Split,
    default_tweets_path,
)
from memcrm.models.train_nba import TrainConfig, pack, predict

# sha256 of the NBA ground truth of 300 training + 100 held-out customers (seed 11, at most
# 600 tweets per kind), computed with the simulator as it was before signals existed.
NBA_TRUTH_DIGEST = "e1f6afef5c41a8ac4c95155d9a42f5ee1679f957e986ab420fe582c73ebe6dcd"

LUGGAGE = "@united you lost my bag on the flight from Denver and nobody can tell me where it is"
DISRUPTION = "@AmericanAir my flight was cancelled again and I am stuck at the airport all night"
SERVICE = "@USAirways on hold for two hours and your agent hung up on me, worst customer service"
POSITIVE = "@SouthwestAir thank you for a great flight, the crew was wonderful and we landed early"


@pytest.fixture(scope="module")
def scorer() -> NbaScorer:
    return load_signal_scorer()


@pytest.fixture(scope="module")
def sim() -> JourneySimulator:
    if not default_tweets_path().is_file():
        pytest.skip(f"shared data set missing: {default_tweets_path()}")
    return JourneySimulator(config=SimulatorConfig(max_tweets_per_kind=600))


def recent(encoder: Encoder, texts: Sequence[str], ages_days: Sequence[float]) -> MemoryFeatures:
    return MemoryFeatures(
        embeddings=encoder.encode(texts),
        ages_days=np.asarray(ages_days, dtype=np.float64),
        channels=np.full(len(texts), int(Channel.SOCIAL), np.int64),
        directions=np.full(len(texts), int(Direction.INBOUND), np.int64),
    )


def enriched(
    encoder: Encoder,
    enrichment_model: EnrichmentModel,
    texts: Sequence[str],
    ages_days: Sequence[float],
) -> MemoryFeatures:
    """``recent`` with each memory's enrichment as ingestion would store it."""
    found = enrich_texts(texts, enrichment_model)
    rows = [enrichment_vector(with_importance(e, Channel.SOCIAL, Direction.INBOUND)) for e in found]
    return replace(recent(encoder, texts, ages_days), enrichment=np.asarray(rows, np.float32))


def probabilities(scorer: NbaScorer, memories: MemoryFeatures) -> dict[str, float]:
    return {p.signal: p.probability for p in predict_signals(scorer.net, memories, explain=False)}


def test_shipped_artifact_loads_and_matches_its_sha256(scorer: NbaScorer) -> None:
    weights = artifact_dir() / f"{SIGNALS_ARTIFACT}.pt"
    assert scorer.sha256 == file_sha256(weights) == scorer.manifest["sha256"]
    assert scorer.version.startswith("signals-airline-")
    assert scorer.version.endswith(scorer.sha256[:8])
    assert scorer.action_ids == SIGNAL_NAMES
    assert scorer.catalog == SIGNAL_DEFINITIONS
    assert scorer.encoder_name == "all-MiniLM-L6-v2"
    for name, metrics in scorer.manifest["metrics"]["held_out"]["per_signal"].items():
        assert metrics["roc_auc_true_logit"] > 0.7, name
        assert 0.7 < metrics["roc_auc"] <= metrics["roc_auc_true_logit"] + 0.01, name


def test_corrupted_or_foreign_artifacts_are_refused(tmp_path: Path) -> None:
    shutil.copy(artifact_dir() / "signals.json", tmp_path / "signals.json")
    data = bytearray((artifact_dir() / "signals.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "signals.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        load_signal_scorer(tmp_path)
    # The NBA model under the signal model's name: trained for other outputs.
    shutil.copy(artifact_dir() / "nba.pt", tmp_path / "signals.pt")
    shutil.copy(artifact_dir() / "nba.json", tmp_path / "signals.json")
    with pytest.raises(ArtifactIntegrityError, match="trained for actions"):
        load_signal_scorer(tmp_path)
    # Right outputs, but not a signal model.
    manifest = json.loads((artifact_dir() / "signals.json").read_text())
    manifest["name"] = "nba"
    shutil.copy(artifact_dir() / "signals.pt", tmp_path / "signals.pt")
    (tmp_path / "signals.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="not a customer-signal model"):
        load_signal_scorer(tmp_path)


def test_three_explained_probabilities(scorer: NbaScorer, encoder: Encoder) -> None:
    memories = recent(encoder, [LUGGAGE, POSITIVE, SERVICE], [2.0, 40.0, 5.0])
    predictions = predict_signals(scorer.net, memories, seed=3)
    assert tuple(p.signal for p in predictions) == SIGNAL_NAMES
    for p in predictions:
        assert isinstance(p, SignalPrediction)
        assert 0.0 < p.probability < 1.0
        assert p.memory_shap is not None and p.memory_shap.shape == (3,)
        assert p.base_log_odds + p.memory_shap.sum() == pytest.approx(p.log_odds, abs=1e-6)
    # Deterministic for a seed, and the same numbers as the batched scorer.
    again = predict_signals(scorer.net, memories, seed=3)
    for a, b in zip(predictions, again, strict=True):
        assert a.log_odds == b.log_odds
        assert np.array_equal(np.asarray(a.memory_shap), np.asarray(b.memory_shap))
    logits = scorer.logits(memories, None)
    np.testing.assert_allclose([p.log_odds for p in predictions], logits, atol=1e-9)
    empty = predict_signals(scorer.net, MemoryFeatures.empty())
    assert all(p.log_odds == p.base_log_odds for p in empty)


def test_recent_complaints_raise_support_need_and_churn(
    scorer: NbaScorer, encoder: Encoder
) -> None:
    complaints = probabilities(scorer, recent(encoder, [LUGGAGE, DISRUPTION], [1.0, 3.0]))
    happy = probabilities(scorer, recent(encoder, [POSITIVE, POSITIVE], [1.0, 3.0]))
    nothing = probabilities(scorer, MemoryFeatures.empty())
    old = probabilities(scorer, recent(encoder, [LUGGAGE, DISRUPTION], [200.0, 240.0]))
    for name in ("support_need", "churn_risk"):
        assert complaints[name] > happy[name], name
        assert complaints[name] > nothing[name], name
    assert happy["purchase_propensity"] > complaints["purchase_propensity"]
    # Support need reads *recent* trouble: the same complaints half a year ago matter less.
    assert complaints["support_need"] > old["support_need"]


def _nba_truth_digest(sim: JourneySimulator, customers: Sequence[SimCustomer]) -> str:
    digest = hashlib.sha256()
    for c in customers:
        history = [
            [sim.tweets[i.tweet].tweet_id, round(i.age_days, 6), int(i.channel), int(i.direction)]
            for i in c.history
        ]
        probabilities = sorted((k, round(v, 9)) for k, v in c.probabilities.items())
        row = [c.customer_id, c.persona, c.context, c.best_action, history]
        digest.update(json.dumps([*row, sorted(c.outcomes.items()), probabilities]).encode())
    return digest.hexdigest()


def test_signals_leave_the_nba_ground_truth_unchanged(sim: JourneySimulator) -> None:
    customers = [*sim.customers(300, Split.TRAIN, 11), *sim.customers(100, Split.HELD_OUT, 11)]
    assert _nba_truth_digest(sim, customers) == NBA_TRUTH_DIGEST


def test_signal_outcomes_are_seeded_and_follow_their_causes(sim: JourneySimulator) -> None:
    assert tuple(SIGNAL_DRIVERS) == SIGNAL_NAMES
    first = sim.customers(400, Split.TRAIN, seed=7)
    again = JourneySimulator(config=sim.config).customers(400, Split.TRAIN, seed=7)
    assert [c.signals for c in first] == [c.signals for c in again]
    other = sim.customers(400, Split.TRAIN, seed=8)
    assert [c.signals.outcomes for c in other] != [c.signals.outcomes for c in first]
    for customer in first:
        truth = customer.signals
        assert set(truth.outcomes) == set(SIGNAL_NAMES)
        # Signals read the history only, never the current context.
        assert truth.logits == sim.signal_logits(customer.history)
        for name, causes in truth.causes.items():
            for i in causes:
                interaction = customer.history[i]
                assert sim.tweets[interaction.tweet].kind in SIGNAL_DRIVERS[name]
                assert interaction.direction is not Direction.OUTBOUND
    rates = {name: np.mean([c.signals.outcomes[name] for c in first]) for name in SIGNAL_NAMES}
    assert all(0.05 < rate < 0.35 for rate in rates.values()), rates


# --- enrichment -------------------------------------------------------------------------------


def test_the_shipped_model_declares_its_enrichment_features(scorer: NbaScorer) -> None:
    assert scorer.enrichment_spec == train_signals.SHIPPED_ENRICHMENT
    assert scorer.manifest["enrichment"] == {
        "features": list(ENRICHMENT_FEATURES),
        "dropout": train_signals.SHIPPED_ENRICHMENT.dropout,
    }
    assert scorer.manifest["training"]["enrichment_dropout"] == scorer.enrichment_spec.dropout
    assert scorer.net.enrichment_proj is not None
    assert scorer.manifest["training_data"]["enrichment"]["tweets_enriched"] > 0


def test_each_memorys_enrichment_moves_the_predictions(
    scorer: NbaScorer, encoder: Encoder, enrichment_model: EnrichmentModel
) -> None:
    texts, ages = [LUGGAGE, POSITIVE, SERVICE], [2.0, 40.0, 5.0]
    known = enriched(encoder, enrichment_model, texts, ages)
    unknown = recent(encoder, texts, ages)
    assert known.enrichment[:, 0].all() and not unknown.enrichment.any()
    assert not np.allclose(scorer.logits(known, None), scorer.logits(unknown, None))
    # Changing one memory's enrichment (the lost bag read as the thank-you) changes the
    # predictions, and that memory's SHAP values.
    swapped = known.enrichment.copy()
    swapped[0] = known.enrichment[1]
    changed = replace(known, enrichment=swapped)
    before = predict_signals(scorer.net, known, seed=3)
    after = predict_signals(scorer.net, changed, seed=3)
    for a, b in zip(before, after, strict=True):
        assert a.log_odds != pytest.approx(b.log_odds, abs=1e-6), a.signal
        assert a.memory_shap is not None and b.memory_shap is not None
        assert a.memory_shap[0] != pytest.approx(b.memory_shap[0], abs=1e-6), a.signal
        assert b.base_log_odds + b.memory_shap.sum() == pytest.approx(b.log_odds, abs=1e-6)
    np.testing.assert_allclose([p.log_odds for p in after], scorer.logits(changed, None), atol=1e-9)


def test_a_memorys_enrichment_reads_the_right_way(
    scorer: NbaScorer, encoder: Encoder, enrichment_model: EnrichmentModel
) -> None:
    """One neutral memory read as the lost bag's enrichment or as the thank-you's."""
    both = enriched(encoder, enrichment_model, [LUGGAGE, POSITIVE], [2.0, 2.0])
    neutral = recent(encoder, ["@united flying to Denver tomorrow morning"], [2.0])
    trouble = probabilities(scorer, replace(neutral, enrichment=both.enrichment[:1]))
    happy = probabilities(scorer, replace(neutral, enrichment=both.enrichment[1:]))
    assert trouble["support_need"] > happy["support_need"] + 0.03
    assert trouble["churn_risk"] > happy["churn_risk"] + 0.03
    assert happy["purchase_propensity"] > trouble["purchase_propensity"] + 0.1


def _stored(i: int, text: str, now: datetime) -> Interaction:
    return Interaction(
        interaction_id=f"i{i}",
        customer_id="c1",
        channel=Channel.SOCIAL,
        occurred_at=now - timedelta(days=2 * i + 1),
        direction=Direction.INBOUND,
        text=text,
    )


def test_served_predictions_read_each_stored_memorys_enrichment(
    scorer: NbaScorer, encoder: Encoder, enrichment_model: EnrichmentModel
) -> None:
    """The serving path: recalled memories -> ``MemoryFeatures.from_recalled`` ->
    ``Predictor`` (profiles, decisions and the signal watcher all score through it)."""
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    texts = [LUGGAGE, DISRUPTION, POSITIVE]
    vectors = encoder.encode(texts)
    stored = enrich_texts(texts, enrichment_model)

    def recalled(enrichments: Sequence[Enrichment]) -> list[RecalledMemory]:
        return [
            RecalledMemory(
                Memory(
                    memory_id=f"m{i}",
                    interaction=_stored(i, text, now),
                    enrichment=e,
                    recorded_at=now,
                    ingest_trace=TraceRef("0" * 32, "0" * 16),
                ),
                0.0,
                ScoreParts(0.0),
                vectors[i],
            )
            for i, (text, e) in enumerate(zip(texts, enrichments, strict=True))
        ]

    predictor = Predictor(scorer, warm=False)
    served = predictor.scores(recalled(stored), now)
    features = MemoryFeatures.from_recalled(recalled(stored), now)
    expected = [
        enrichment_vector(with_importance(e, Channel.SOCIAL, Direction.INBOUND)) for e in stored
    ]
    np.testing.assert_allclose(features.enrichment, expected, rtol=1e-6)
    direct = {p.signal: p.probability for p in predict_signals(scorer.net, features, explain=False)}
    assert served == pytest.approx(direct, abs=1e-12)
    # Memories stored without interpretation: enrichment "not known", other predictions.
    bare = predictor.scores(recalled([Enrichment(model_version="")] * 3), now)
    assert any(abs(bare[name] - served[name]) > 1e-6 for name in SIGNAL_NAMES)
    explained = predictor.explain(recalled(stored), now)
    assert [p.score for p in explained] == pytest.approx([served[n] for n in SIGNAL_NAMES])


def test_a_signal_artifact_without_enrichment_still_loads(
    scorer: NbaScorer, encoder: Encoder, enrichment_model: EnrichmentModel, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = NbaNet(scorer.net.action_text.float(), NbaHyperParams()).eval()
    assert net.enrichment_spec is None
    manifest = {k: v for k, v in scorer.manifest.items() if k != "enrichment"}
    manifest["version"] = "signals-without-enrichment-{sha}"
    written = write_artifact(net, tmp_path, manifest, name=SIGNALS_ARTIFACT)
    assert "enrichment" not in written
    old = load_signal_scorer(tmp_path)
    assert old.enrichment_spec is None and old.action_ids == SIGNAL_NAMES
    texts, ages = [LUGGAGE, SERVICE], [1.0, 4.0]
    known = enriched(encoder, enrichment_model, texts, ages)
    # Enrichment is not an input of this network: ignored, not refused.
    assert probabilities(old, known) == probabilities(old, recent(encoder, texts, ages))


def test_eval_signals_packs_and_serves_each_memorys_enrichment(
    sim: JourneySimulator, scorer: NbaScorer, enrichment_model: EnrichmentModel
) -> None:
    customers = sim.customers(40, Split.HELD_OUT, 3)
    used = eval_signals.history_tweets(customers)
    texts = [sim.tweets[i].text for i in used]
    table, rows = eval_signals.embedding_table(enrichment_model.encoder.encode(texts), used)
    enrichments = dict(zip(used, enrich_texts(texts, enrichment_model), strict=True))
    width = sim.config.max_history
    data, truth = eval_signals.pack_signals(customers, rows, width, enrichments)
    views = [eval_signals.signal_view(c) for c in customers]
    same = pack(views, rows, SIGNAL_DEFINITIONS, width, enrichments)  # train_nba's packing
    assert data.enrichment is not None and same.enrichment is not None
    np.testing.assert_array_equal(data.enrichment, same.enrichment)
    np.testing.assert_array_equal(truth, eval_signals.true_signal_logits(customers))
    batch = predict(scorer.net, data, table)
    for row in range(10):
        memories = eval_signals.customer_memories(data, table, row)
        m = len(customers[row].history)
        np.testing.assert_array_equal(memories.enrichment, data.enrichment[row, :m])
        assert memories.enrichment[:, 0].all()  # every tweet was interpreted
        served = predict_signals(scorer.net, memories, explain=False)
        np.testing.assert_allclose([p.log_odds for p in served], batch[row], atol=1e-9)
    plain, _ = eval_signals.pack_signals(customers, rows, width)
    assert plain.enrichment is None
    assert not eval_signals.customer_memories(plain, table, 0).enrichment.any()
    assert not np.allclose(predict(scorer.net, plain, table), batch)


def test_train_signals_simulates_as_train_nba_with_signal_views() -> None:
    if not default_tweets_path().is_file():
        pytest.skip(f"shared data set missing: {default_tweets_path()}")
    cfg = TrainConfig(
        train_customers=60, validation_customers=30, held_out_customers=30, max_tweets_per_kind=300
    )
    prepared = train_signals.simulate(cfg, 7, enrichment=False)
    assert prepared.action_text.shape == (len(SIGNAL_NAMES), prepared.table.shape[1])
    assert prepared.enrichment is None
    sim = prepared.sim
    expected = sim.customers(30, Split.HELD_OUT, 7)
    assert prepared.held_out_set == [eval_signals.signal_view(c) for c in expected]
    for customers, data in (
        (prepared.train_set, prepared.train),
        (prepared.validation_set, prepared.validation),
        (prepared.held_out_set, prepared.held_out),
    ):
        assert not data.context_mask.any()
        assert all(c.context is None for c in customers)
        outcomes = [[c.signals.outcomes[name] for name in SIGNAL_NAMES] for c in customers]
        np.testing.assert_array_equal(data.outcomes, np.asarray(outcomes, np.float32))
    # Validation customers read only the enrichment trainer's validation texts, training
    # customers never (train_nba.restrict_texts), and their signal truth is still exact.
    for customers, validation in ((prepared.train_set, False), (prepared.validation_set, True)):
        for c in customers:
            assert c.signals.logits == sim.signal_logits(c.history)
            for h in c.history:
                tweet = sim.tweets[h.tweet]
                assert tweet.split is Split.TRAIN
                assert enrichment_validation_tweet(tweet.tweet_id) == validation
