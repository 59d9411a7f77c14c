"""The recommender with the real encoder, the shipped model and real shap (no mocks)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memcrm.core.errors import ConfigError, InvalidArgument
from memcrm.core.types import (
    Channel,
    Decision,
    Direction,
    Enrichment,
    Interaction,
    Memory,
    RecalledMemory,
    ScoreParts,
    TraceRef,
)
from memcrm.decisions.arbitration import CustomerHistory
from memcrm.decisions.catalog import BUILTIN_CATALOG
from memcrm.decisions.contact import Consent, ContactEvent
from memcrm.decisions.policy import DecisionContext, ProfileFacts
from memcrm.decisions.recommender import DecisionInputs, Recommender
from memcrm.decisions.tenant_catalog import TenantCatalog, builtin_catalog, parse_catalog
from memcrm.models.encoder import Encoder
from memcrm.models.nba import MemoryFeatures, NbaScorer, ScoringPrecision

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BAG_CONTEXT = "Still no news about my suitcase, it has been three days"

# (text, days ago, channel, direction)
BAG_HISTORY = [
    ("@united you lost my bag on the flight to Denver and nobody can tell me where it is",
     2.0, Channel.SOCIAL, Direction.INBOUND),
    ("What time does the check-in desk open at Newark tomorrow?",
     20.0, Channel.CHAT, Direction.INBOUND),
    ("Thanks for the quick answer about the lounge, have a nice day",
     45.0, Channel.EMAIL, Direction.INBOUND),
    ("Your boarding pass for flight UA 523 is attached",
     21.0, Channel.EMAIL, Direction.OUTBOUND),
]  # fmt: skip

MIXED_TEXTS = [
    "my flight was cancelled and I am stuck at the airport with no hotel",
    "I have been on hold for two hours, your customer service is useless",
    "called again today and still nobody can help me, this is the third time",
    "great crew on my flight to Boston, thank you!",
    "the seat was comfortable and the wifi worked well",
    "can I bring a guitar as carry-on?",
    "my suitcase arrived with a broken handle",
    "delayed again, I am going to miss my connection",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def scorer() -> NbaScorer:
    return NbaScorer()


@pytest.fixture(scope="module")
def recommender(encoder: Encoder, scorer: NbaScorer) -> Recommender:
    return Recommender(encoder, scorer)


def build(
    encoder: Encoder, items: Sequence[tuple[str, float, Channel, Direction]]
) -> list[RecalledMemory]:
    vectors = encoder.encode([text for text, *_ in items])
    recalled = []
    for i, ((text, days, channel, direction), vector) in enumerate(
        zip(items, vectors, strict=True)
    ):
        interaction = Interaction(
            interaction_id=f"i-{i}",
            customer_id="c-1",
            channel=channel,
            occurred_at=NOW - timedelta(days=days),
            direction=direction,
            text=text,
        )
        memory = Memory(
            memory_id=f"m-{i}",
            interaction=interaction,
            enrichment=Enrichment(model_version="test"),
            recorded_at=interaction.occurred_at,
            ingest_trace=TraceRef(trace_id="0" * 32, span_id="0" * 16),
        )
        recalled.append(
            RecalledMemory(
                memory=memory, score=1.0, parts=ScoreParts(semantic=1.0), embedding=vector
            )
        )
    return recalled


def many_memories(encoder: Encoder, n: int) -> list[RecalledMemory]:
    channels = [c for c in Channel if c is not Channel.UNSPECIFIED]
    items = [
        (MIXED_TEXTS[i % len(MIXED_TEXTS)], 1.0 + 5.5 * i, channels[i % len(channels)],
         Direction.OUTBOUND if i % 7 == 6 else Direction.INBOUND)
        for i in range(n)
    ]  # fmt: skip
    return build(encoder, items)


def assert_well_formed(decision: Decision, recalled: Sequence[RecalledMemory]) -> None:
    ids = sorted(r.memory.memory_id for r in recalled)
    for rank, action in enumerate(decision.actions, start=1):
        e = action.explanation
        total = e.base_value + sum(f.shap_value for f in e.features)
        total += sum(m.shap_value for m in e.memories)
        assert abs(total - e.output_value) < 1e-4
        assert action.rank == rank
        assert action.propensity == pytest.approx(1 / (1 + math.exp(-e.output_value)), abs=1e-12)
        assert action.score == pytest.approx(action.propensity * action.value)
        assert e.output_name == f"log-odds that {action.action_id} succeeds"
        assert [f.feature for f in e.features] == ["context"]
        assert sorted(m.memory_id for m in e.memories) == ids
        magnitudes = [abs(m.shap_value) for m in e.memories]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert e.summary.endswith(".")
    scores = [a.score for a in decision.actions]
    assert scores == sorted(scores, reverse=True)


def test_thirty_two_memories_every_action_additive(
    encoder: Encoder, recommender: Recommender, scorer: NbaScorer
) -> None:
    recalled = many_memories(encoder, 32)
    decision = recommender.decide(recalled, "where is my bag?", Channel.UNSPECIFIED, 3, NOW)
    assert len(decision.actions) == 3
    assert decision.model_version == scorer.version
    assert decision.model_sha256 == scorer.sha256
    assert_well_formed(decision, recalled)
    for action in decision.actions:
        assert action.explanation.explainer == "shap.PermutationExplainer(max_evals=670, seed=0)"
        assert action.explanation.features[0].value == "where is my bag?"


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_an_explanation_reports_the_log_odds_the_action_ranked_on(
    encoder: Encoder, recommender: Recommender, precision: ScoringPrecision
) -> None:
    recalled = many_memories(encoder, 32)
    audit = recommender.decide_audited(
        recalled, inputs(Channel.UNSPECIFIED, BAG_CONTEXT), 3, precision=precision
    )
    assert audit.scoring_precision == precision
    assert_well_formed(audit.decision, recalled)
    considered = {c.action_id: c for c in audit.considered}
    for action in audit.decision.actions:
        # The same number, not a recomputation that may round differently.
        assert action.explanation.output_value == considered[action.action_id].log_odds


def test_same_inputs_give_identical_decisions(encoder: Encoder, scorer: NbaScorer) -> None:
    recalled = many_memories(encoder, 20)
    first = Recommender(encoder, scorer).decide(recalled, BAG_CONTEXT, Channel.EMAIL, 3, NOW)
    again = Recommender(encoder, scorer).decide(recalled, BAG_CONTEXT, Channel.EMAIL, 3, NOW)
    assert first == again
    small = build(encoder, BAG_HISTORY)  # 5 players: exact enumeration
    exact = Recommender(encoder, scorer).decide(small, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW)
    assert exact.actions[0].explanation.explainer.startswith("shap.ExactExplainer(")
    assert exact == Recommender(encoder, scorer).decide(
        small, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW
    )


def test_lost_bag_recommends_baggage_trace_because_of_the_complaint(
    encoder: Encoder, recommender: Recommender
) -> None:
    recalled = build(encoder, BAG_HISTORY)
    decision = recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW)
    assert_well_formed(decision, recalled)
    top = decision.actions[0]
    assert top.action_id == "baggage_trace"
    strongest = top.explanation.memories[0]
    assert strongest.memory_id == "m-0" and strongest.shap_value > 0
    assert "2026-02-27" in top.explanation.summary
    assert "lost my bag" in top.explanation.summary


def test_removing_the_top_memory_moves_the_logit_its_way(
    encoder: Encoder, recommender: Recommender, scorer: NbaScorer
) -> None:
    recalled = build(encoder, BAG_HISTORY) + many_memories(encoder, 6)
    context = encoder.encode([BAG_CONTEXT])[0]
    decision = recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW)
    column = {a: i for i, a in enumerate(scorer.action_ids)}
    for action in decision.actions:
        top = action.explanation.memories[0]
        rest = [r for r in recalled if r.memory.memory_id != top.memory_id]
        without = scorer.logits(MemoryFeatures.from_recalled(rest, NOW), context)
        change = action.explanation.output_value - without[column[action.action_id]]
        assert np.sign(change) == np.sign(top.shap_value)
        assert abs(change) > 1e-3


def test_no_memories_and_no_context(recommender: Recommender) -> None:
    decision = recommender.decide([], "", Channel.UNSPECIFIED, 3, NOW)
    assert len(decision.actions) == 3
    for action in decision.actions:
        e = action.explanation
        assert e.memories == []
        assert e.features[0].shap_value == 0.0
        assert e.base_value == pytest.approx(e.output_value, abs=1e-12)
        assert "No memories" in e.summary


def test_context_only(recommender: Recommender) -> None:
    decision = recommender.decide([], BAG_CONTEXT, Channel.UNSPECIFIED, 2, NOW)
    assert len(decision.actions) == 2
    assert_well_formed(decision, [])
    for action in decision.actions:
        e = action.explanation
        assert e.features[0].shap_value == pytest.approx(e.output_value - e.base_value, abs=1e-9)


def test_channel_filter(encoder: Encoder, recommender: Recommender) -> None:
    recalled = build(encoder, BAG_HISTORY)
    on_purchase = recommender.decide(recalled, "", Channel.PURCHASE, 3, NOW)
    assert [a.action_id for a in on_purchase.actions] == ["seat_upgrade_offer"]
    assert recommender.decide(recalled, "", Channel.MEETING, 3, NOW).actions == []
    audit = recommender.decide_audited(recalled, inputs(Channel.VOICE), 5)
    allowed = {a.action_id for a in BUILTIN_CATALOG if Channel.VOICE in a.channels}
    assert {a.action_id for a in audit.decision.actions} == allowed
    assert sorted(c.action_id for c in audit.considered) == sorted(builtin_catalog().action_ids)
    for c in audit.considered:
        if c.action_id in allowed:
            assert (c.filtered_by, c.reason, c.rank > 0) == ("", "", True)
        else:
            assert c.filtered_by == "channel" and c.policy == "channels"
            assert c.reason.startswith("filtered by channel channels: goes out on ")
            assert json.loads(c.reads_json)["context.channel"] == "voice"
            assert (c.rank, c.score) == (0, 0.0)
            assert 0.0 < c.propensity < 1.0, "filtered actions keep the model's numbers"


def inputs(
    channel: Channel = Channel.UNSPECIFIED,
    context: str = "",
    catalog: TenantCatalog | None = None,
    **kw: object,
) -> DecisionInputs:
    return DecisionInputs(
        DecisionContext(channel, NOW, context),
        catalog or builtin_catalog(),
        **kw,  # type: ignore[arg-type]
    )


def test_policies_filter_with_their_reasons_and_the_rest_still_rank(
    encoder: Encoder, recommender: Recommender
) -> None:
    recalled = build(encoder, BAG_HISTORY)
    complaint = ProfileFacts(interaction_count=4, open_issues=("Lost Luggage",), no_calls=True)
    withdrawn = Consent(False, NOW - timedelta(days=3), "i-9")
    credit = ContactEvent("apology_credit", Channel.EMAIL, NOW - timedelta(days=29))
    audit = recommender.decide_audited(
        recalled,
        inputs(
            profile=complaint,
            history=CustomerHistory(contacts=(credit,), consent=withdrawn),
        ),
        6,
    )
    why = {c.action_id: (c.filtered_by, c.policy) for c in audit.considered}
    assert why["seat_upgrade_offer"] == ("consent", "marketing")
    assert why["loyalty_thanks"] == ("suitability", "suitability[0]")
    assert why["escalate_to_agent"] == ("suitability", "suitability[0]")
    assert why["apology_credit"] == ("contact", "contact[0]")
    assert why["rebooking_assist"] == why["baggage_trace"] == ("", "")
    assert [a.action_id for a in audit.decision.actions] == [
        c.action_id for c in audit.considered if c.rank > 0
    ]
    loyalty = next(c for c in audit.considered if c.action_id == "loyalty_thanks")
    assert json.loads(loyalty.reads_json) == {"profile.open_issues": ["Lost Luggage"]}
    # A day later the credit's 30-day cap has passed: the action is back.
    later = recommender.decide_audited(
        recalled,
        DecisionInputs(
            DecisionContext(Channel.UNSPECIFIED, NOW + timedelta(days=1, seconds=1)),
            builtin_catalog(),
            complaint,
            CustomerHistory(contacts=(credit,), consent=withdrawn),
        ),
        6,
    )
    assert "apology_credit" in {a.action_id for a in later.decision.actions}


def test_priority_is_propensity_times_context_weight_value_and_lever(
    encoder: Encoder, recommender: Recommender
) -> None:
    catalog = parse_catalog(
        """
version: t-3
context_weights:
  - {channel: email, actions: [baggage_trace], weight: 2.5}
actions:
  - id: baggage_trace
    title: Trace the bag
    description: Open a baggage trace.
    channels: [email]
    value: 3.0
    lever: 0.5
  - id: rebooking_assist
    title: Rebook
    description: Rebook the flight.
    channels: [email, chat]
    value: 3.0
""",
        "t.yaml",
    )
    recalled = build(encoder, BAG_HISTORY)
    audit = recommender.decide_audited(recalled, inputs(Channel.EMAIL, BAG_CONTEXT, catalog), 2)
    assert audit.catalog_version == "t-3"
    by_id = {c.action_id: c for c in audit.considered}
    trace, rebook = by_id["baggage_trace"], by_id["rebooking_assist"]
    assert (trace.context_weight, trace.lever) == (2.5, 0.5)
    assert trace.score == pytest.approx(trace.propensity * 2.5 * 3.0 * 0.5)
    assert rebook.score == pytest.approx(rebook.propensity * 3.0)
    returned = {a.action_id: a for a in audit.decision.actions}
    assert returned["baggage_trace"].score == pytest.approx(trace.score)
    order = sorted([trace, rebook], key=lambda c: -c.score)
    assert [a.action_id for a in audit.decision.actions] == [c.action_id for c in order]


def test_a_catalog_the_model_cannot_score_is_refused(recommender: Recommender) -> None:
    catalog = parse_catalog(
        "version: 1\nactions:\n"
        "  - {id: free_pizza, title: Pizza, description: Pizza., channels: [email], value: 1}\n",
        "t.yaml",
    )
    with pytest.raises(ConfigError, match="cannot score actions \\['free_pizza'\\]"):
        recommender.check_catalog(catalog)
    with pytest.raises(ConfigError, match="free_pizza"):
        recommender.decide_audited([], inputs(catalog=catalog), 3)


def test_top_n_limits_and_validates(encoder: Encoder, recommender: Recommender) -> None:
    recalled = build(encoder, BAG_HISTORY)
    one = recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 1, NOW)
    three = recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW)
    assert [a.action_id for a in one.actions] == [three.actions[0].action_id]
    everything = recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 50, NOW)
    assert len(everything.actions) == len(BUILTIN_CATALOG), "no policy applies to this history"
    with pytest.raises(InvalidArgument, match="top_n"):
        recommender.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 0, NOW)


def test_precomputed_context_embedding(encoder: Encoder, scorer: NbaScorer) -> None:
    recalled = build(encoder, BAG_HISTORY)
    without_encoder = Recommender(None, scorer)
    with pytest.raises(ConfigError, match="encoder"):
        without_encoder.decide(recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW)
    vector = encoder.encode([BAG_CONTEXT])[0]
    given = without_encoder.decide(
        recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW, context_embedding=vector
    )
    encoded = Recommender(encoder, scorer).decide(
        recalled, BAG_CONTEXT, Channel.UNSPECIFIED, 3, NOW
    )
    assert given == encoded
