"""The journey simulator: seeded, split by tweet id, and faithful to its documented causes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from memcrm.core.types import Channel, Direction
from memcrm.decisions.catalog import BUILTIN_CATALOG
from memcrm.models.simulator import (
    DRIVERS,
    JourneySimulator,
    Kind,
    SimCustomer,
    SimInteraction,
    SimulatorConfig,
    Split,
    default_tweets_path,
    split_of,
    structural_logits,
)


@pytest.fixture(scope="module")
def sim() -> JourneySimulator:
    if not default_tweets_path().is_file():
        pytest.skip(f"shared data set missing: {default_tweets_path()}")
    return JourneySimulator(config=SimulatorConfig(max_tweets_per_kind=600))


def test_same_seed_gives_the_same_customers(sim: JourneySimulator) -> None:
    first = sim.customers(200, Split.TRAIN, seed=7)
    again = JourneySimulator(config=sim.config).customers(200, Split.TRAIN, seed=7)
    assert first == again
    other = sim.customers(200, Split.TRAIN, seed=8)
    assert [c.history for c in other] != [c.history for c in first]


def test_held_out_customers_only_use_held_out_tweets(sim: JourneySimulator) -> None:
    train = sim.customers(500, Split.TRAIN, seed=1)
    held_out = sim.customers(500, Split.HELD_OUT, seed=1)

    def tweet_ids(customers: Sequence[SimCustomer]) -> set[int]:
        ids = {sim.tweets[i.tweet].tweet_id for c in customers for i in c.history}
        return ids | {sim.tweets[c.context].tweet_id for c in customers if c.context is not None}

    train_ids, held_out_ids = tweet_ids(train), tweet_ids(held_out)
    assert train_ids.isdisjoint(held_out_ids)
    assert all(split_of(t) is Split.HELD_OUT for t in held_out_ids)
    assert all(split_of(t) is Split.TRAIN for t in train_ids)
    # The split is a property of the tweet id alone, not of the simulator's settings.
    assert all(t.split is split_of(t.tweet_id) for t in sim.tweets)


def test_histories_respect_the_configured_shape(sim: JourneySimulator) -> None:
    customers = sim.customers(300, Split.TRAIN, seed=3)
    lengths = {len(c.history) for c in customers}
    assert min(lengths) >= 1 and max(lengths) <= 12
    for customer in customers:
        ages = [i.age_days for i in customer.history]
        assert ages == sorted(ages, reverse=True)
        assert all(0.0 <= age <= sim.config.max_age_days for age in ages)
        assert set(customer.outcomes) == {a.action_id for a in BUILTIN_CATALOG}


def test_true_causes_are_weighted_interactions_of_the_driving_kinds(sim: JourneySimulator) -> None:
    for customer in sim.customers(300, Split.TRAIN, seed=4):
        for action_id, causes in customer.causes.items():
            for index in causes:
                interaction = customer.history[index]
                assert interaction.direction is not Direction.OUTBOUND
                assert sim.tweets[interaction.tweet].kind in DRIVERS[action_id]
                assert sim.weight(interaction) > 0


def test_documented_causal_structure(sim: JourneySimulator) -> None:
    luggage = sim.pool(Split.TRAIN, Kind.LUGGAGE)[0]
    neutral = sim.pool(Split.TRAIN, Kind.NEUTRAL)[0]

    def logits(*history: SimInteraction) -> dict[str, float]:
        return structural_logits(sim.loads(history, None))

    fresh = SimInteraction(luggage, 1.0, Channel.SOCIAL, Direction.INBOUND)
    old = SimInteraction(luggage, 150.0, Channel.SOCIAL, Direction.INBOUND)
    outbound = SimInteraction(luggage, 1.0, Channel.SOCIAL, Direction.OUTBOUND)
    filler = SimInteraction(neutral, 1.0, Channel.SOCIAL, Direction.INBOUND)
    nothing = logits()
    bag = logits(fresh)
    assert bag["baggage_trace"] > nothing["baggage_trace"] + 2.0
    assert bag["apology_credit"] > nothing["apology_credit"]
    assert bag["seat_upgrade_offer"] < nothing["seat_upgrade_offer"] - 1.0
    assert logits(old)["baggage_trace"] < bag["baggage_trace"]  # recency decay
    assert logits(outbound) == nothing  # outbound interactions cause nothing
    assert logits(filler) == nothing  # neutral filler causes nothing
    emphatic = SimInteraction(luggage, 1.0, Channel.VOICE, Direction.INBOUND)
    assert sim.weight(emphatic) == pytest.approx(1.5 * sim.weight(fresh))


def test_outcome_rates_follow_the_probabilities(sim: JourneySimulator) -> None:
    customers = sim.customers(3000, Split.TRAIN, seed=5)
    for action in BUILTIN_CATALOG:
        rate = sum(c.outcomes[action.action_id] for c in customers) / len(customers)
        mean_p = sum(c.probabilities[action.action_id] for c in customers) / len(customers)
        assert abs(rate - mean_p) < 0.03
