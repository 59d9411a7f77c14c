"""The customer-signal model: verified artifact, three explained probabilities, sensible
directions on real texts, and simulator signals that leave the NBA ground truth untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memcrm.core.types import SIGNAL_NAMES, Channel, Direction
from memcrm.models.encoder import Encoder
from memcrm.models.nba import ArtifactIntegrityError, MemoryFeatures, NbaScorer, file_sha256
from memcrm.models.nba import default_artifact_dir as artifact_dir
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
