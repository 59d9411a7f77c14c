"""train_nba with enrichment: validation texts, packing and a deterministic (tiny) fit.

Runs on a small real subset: a simulator capped at 300 tweets per kind, a few hundred
customers, the shipped enrichment model on the tweets they use.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from memcrm.core.types import EMBEDDING_DIM, Enrichment
from memcrm.decisions.catalog import BUILTIN_CATALOG
from memcrm.models.enrichment import EnrichmentModel
from memcrm.models.enrichment_data import _bucket
from memcrm.models.nba_enrichment import (
    enrich_texts,
    enrichment_validation_tweet,
    with_importance,
)
from memcrm.models.nba_net import N_ENRICHMENT_FEATURES, EnrichmentSpec, NbaNet, enrichment_vector
from memcrm.models.simulator import (
    JourneySimulator,
    SimCustomer,
    SimulatorConfig,
    Split,
    default_tweets_path,
)
from memcrm.models.train_nba import TrainConfig, pack, predict, restrict_texts, train

SEED = 5


@pytest.fixture(scope="module")
def sim() -> JourneySimulator:
    if not default_tweets_path().is_file():
        pytest.skip(f"shared data set missing: {default_tweets_path()}")
    return JourneySimulator(config=SimulatorConfig(max_tweets_per_kind=300))


def _texts(sim: JourneySimulator, validation: bool) -> frozenset[int]:
    return frozenset(
        i
        for i, t in enumerate(sim.tweets)
        if t.split is Split.TRAIN and enrichment_validation_tweet(t.tweet_id) == validation
    )


def test_validation_texts_are_the_enrichment_trainers_validation_bucket() -> None:
    for tweet_id in range(570_000_000_000_000_000, 570_000_000_000_000_400):
        assert enrichment_validation_tweet(tweet_id) == (_bucket(f"enrich-val:{tweet_id}") == 0)


def test_restricting_texts_keeps_every_kind_and_the_ground_truth(sim: JourneySimulator) -> None:
    customers = sim.customers(60, Split.TRAIN, SEED)
    allowed = _texts(sim, validation=True)
    restricted = restrict_texts(sim, customers, allowed, SEED)
    assert restricted == restrict_texts(sim, customers, allowed, SEED)  # seeded
    changed = 0
    for before, after in zip(customers, restricted, strict=True):
        assert len(after.history) == len(before.history)
        for old, new in zip(before.history, after.history, strict=True):
            assert new.tweet in allowed
            assert sim.tweets[new.tweet].kind is sim.tweets[old.tweet].kind
            assert (new.age_days, new.channel, new.direction) == (
                old.age_days,
                old.channel,
                old.direction,
            )
            changed += new.tweet != old.tweet
        if before.context is None:
            assert after.context is None
        else:
            assert after.context in allowed
            assert sim.tweets[after.context].kind is sim.tweets[before.context].kind
        # Everything else is untouched, and still what the simulator's equations say.
        assert dataclasses.replace(after, history=before.history, context=before.context) == before
        loads = sim.loads(after.history, after.context)
        assert loads == sim.loads(before.history, before.context)
    assert changed > 0
    # Training customers keep their (training) tweets and lose only validation texts.
    kept = restrict_texts(sim, customers, _texts(sim, validation=False), SEED)
    assert all(
        new.tweet == old.tweet
        for before, after in zip(customers, kept, strict=True)
        for old, new in zip(before.history, after.history, strict=True)
        if old.tweet not in allowed
    )


@pytest.fixture(scope="module")
def packed(
    sim: JourneySimulator, enrichment_model: EnrichmentModel
) -> tuple[list[SimCustomer], dict[int, Enrichment], dict[int, int], torch.Tensor]:
    customers = sim.customers(300, Split.TRAIN, SEED)
    used = sorted(
        {i.tweet for c in customers for i in c.history}
        | {c.context for c in customers if c.context is not None}
    )
    enrichments = dict(
        zip(used, enrich_texts([sim.tweets[i].text for i in used], enrichment_model), strict=True)
    )
    vectors = enrichment_model.encoder.encode([sim.tweets[i].text for i in used])
    table = torch.from_numpy(np.concatenate([np.zeros((1, EMBEDDING_DIM), np.float32), vectors]))
    rows = {tweet: row + 1 for row, tweet in enumerate(used)}
    return customers, enrichments, rows, table


def test_pack_gives_each_interaction_its_tweets_enrichment(
    sim: JourneySimulator,
    packed: tuple[list[SimCustomer], dict[int, Enrichment], dict[int, int], torch.Tensor],
) -> None:
    customers, enrichments, rows, _ = packed
    data = pack(customers, rows, BUILTIN_CATALOG, sim.config.max_history, enrichments)
    assert data.enrichment is not None
    assert data.enrichment.shape == (300, sim.config.max_history, N_ENRICHMENT_FEATURES)
    for i, customer in enumerate(customers[:40]):
        for j, h in enumerate(customer.history):
            expected = enrichment_vector(
                with_importance(enrichments[h.tweet], h.channel, h.direction)
            )
            np.testing.assert_allclose(data.enrichment[i, j], expected, rtol=1e-6)
        assert not data.enrichment[i, len(customer.history) :].any()  # padding
    # Sentiment is known for every tweet; enrichment is what the model reads per memory.
    assert (data.enrichment[data.mask][:, 0] == 1.0).all()
    plain = pack(customers, rows, BUILTIN_CATALOG, sim.config.max_history)
    assert plain.enrichment is None
    np.testing.assert_array_equal(plain.tweets, data.tweets)


def test_training_with_enrichment_is_deterministic(
    sim: JourneySimulator,
    packed: tuple[list[SimCustomer], dict[int, Enrichment], dict[int, int], torch.Tensor],
) -> None:
    customers, enrichments, rows, table = packed
    data = pack(customers, rows, BUILTIN_CATALOG, sim.config.max_history, enrichments)
    cfg = TrainConfig(epochs=2, batch_size=64)
    action_text = torch.randn(len(BUILTIN_CATALOG), EMBEDDING_DIM, generator=torch.Generator())

    def fit() -> NbaNet:
        torch.manual_seed(SEED)
        net = NbaNet(action_text, enrichment=EnrichmentSpec(dropout=0.3))
        train(net, data, None, table, cfg, SEED, verbose=False)
        return net.eval()

    first, again = fit(), fit()
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with_enrichment = predict(first, data, table)
    without = predict(first, dataclasses.replace(data, enrichment=None), table)
    assert with_enrichment.shape == (300, len(BUILTIN_CATALOG))
    assert not np.allclose(with_enrichment, without)
