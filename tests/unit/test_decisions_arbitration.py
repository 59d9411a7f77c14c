"""Arbitration: every rule kind filters what it should and says why; priority and ranking."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel, Outcome
from memcrm.decisions.arbitration import (
    Arbitration,
    CustomerHistory,
    Filtered,
    FilterKind,
    Ranked,
    arbitrate,
)
from memcrm.decisions.contact import Consent, ContactEvent, OutcomeEvent
from memcrm.decisions.policy import (
    DecisionContext,
    Event,
    Features,
    FeatureValue,
    ProfileFacts,
    build_features,
)
from memcrm.decisions.tenant_catalog import TenantCatalog, builtin_catalog, parse_catalog

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)

CATALOG = parse_catalog(
    """
version: 12
contact:
  - {channel: sms, max: 3, within: 1d}
context_weights:
  - {channel: chat, actions: [plain], weight: 2.0}
  - {intent: complaint, actions: [plain, picky], weight: 0.5}
actions:
  - id: plain
    title: Plain
    description: No policies.
    channels: [email, chat, sms]
    value: 2.0
    lever: 1.5
  - id: picky
    title: Picky
    description: Every rule kind.
    channels: [email, sms]
    value: 3.0
    eligibility: ["profile.interaction_count >= 1"]
    applicability: ["count(memory.issues, 'Lost Luggage', 30d) > 0"]
    suitability: ["not profile.no_calls", "prediction.churn_risk < 0.9"]
  - id: promo
    title: Promo
    description: Marketing.
    channels: [email, sms, web]
    value: 4.0
    marketing: true
  - id: capped
    title: Capped
    description: Contact caps and suppression.
    channels: [email, sms]
    value: 1.0
    contact:
      - {channel: email, max: 2, within: 7d}
      - {channel: sms, max: 1, within: 7d}
    suppress: {after_rejections: 2, within: 30d, for: 14d}
  - id: voice_only
    title: Voice only
    description: A call.
    channels: [voice]
    value: 5.0
""",
    "test.yaml",
)

PROPENSITY = {"plain": 0.5, "picky": 0.4, "promo": 0.3, "capped": 0.9, "voice_only": 0.2}


def context(channel: Channel = Channel.UNSPECIFIED, intent: str = "") -> DecisionContext:
    return DecisionContext(channel, NOW, "hello", intent)


def good_features(channel: Channel = Channel.UNSPECIFIED, **values: FeatureValue) -> Features:
    """A customer every rule of ``picky`` accepts, with ``values`` overriding."""
    base: dict[str, FeatureValue] = {
        "profile.interaction_count": 3.0,
        "profile.no_calls": False,
        "prediction.churn_risk": 0.5,
        "memory.issues": (Event("Lost Luggage", NOW - 29 * DAY, 0.9),),
    }
    return Features(CATALOG.schema, base | values, NOW)


def run(
    *,
    channel: Channel = Channel.UNSPECIFIED,
    intent: str = "",
    features: Features | None = None,
    history: CustomerHistory | None = None,
    top_n: int = 2,
    catalog: TenantCatalog = CATALOG,
) -> Arbitration:
    return arbitrate(
        catalog,
        context(channel, intent),
        features if features is not None else good_features(),
        history or CustomerHistory(),
        PROPENSITY,
        top_n=top_n,
    )


def outcome_of(result: Arbitration, action_id: str) -> Ranked | Filtered:
    return next(c for c in result.considered if c.action_id == action_id)


def filtered(result: Arbitration, action_id: str) -> Filtered:
    item = outcome_of(result, action_id)
    assert isinstance(item, Filtered), item
    return item


def ranked(result: Arbitration, action_id: str) -> Ranked:
    item = outcome_of(result, action_id)
    assert isinstance(item, Ranked), item
    return item


# ---------------------------------------------------------------------------------------------
# Priority and ranking


def test_priority_is_propensity_times_context_weight_times_value_times_lever() -> None:
    result = run(channel=Channel.EMAIL)
    assert [c.action_id for c in result.considered] == list(CATALOG.action_ids)
    plain = ranked(result, "plain")
    assert (plain.propensity, plain.context_weight, plain.value, plain.lever) == (
        0.5,
        1.0,
        2.0,
        1.5,
    )
    assert plain.priority == pytest.approx(1.5)
    assert ranked(result, "picky").priority == pytest.approx(0.4 * 3.0)
    assert ranked(result, "promo").priority == pytest.approx(0.3 * 4.0)
    assert ranked(result, "capped").priority == pytest.approx(0.9 * 1.0)
    assert [(r.action_id, r.rank, r.selected) for r in result.ranked] == [
        ("plain", 1, True),
        ("picky", 2, True),
        ("promo", 3, False),
        ("capped", 4, False),
    ]
    assert [r.action_id for r in result.top] == ["plain", "picky"]
    assert [f.action_id for f in result.filtered] == ["voice_only"]


def test_context_weights_change_the_ranking() -> None:
    on_chat = run(channel=Channel.CHAT, top_n=1)
    assert ranked(on_chat, "plain").context_weight == 2.0
    assert ranked(on_chat, "plain").priority == pytest.approx(3.0)
    complaint = run(channel=Channel.EMAIL, intent="complaint", top_n=1)
    assert ranked(complaint, "plain").context_weight == 0.5
    assert ranked(complaint, "picky").context_weight == 0.5
    assert ranked(complaint, "promo").context_weight == 1.0
    # plain 0.75, picky 0.6, promo 1.2: the intent weight puts promo first.
    assert [r.action_id for r in complaint.top] == ["promo"]


def test_ties_go_to_the_smaller_action_id_whatever_the_catalog_order() -> None:
    text = """
version: 1
actions:
  - {id: zeta, title: Z, description: Z, channels: [email], value: 2}
  - {id: alpha, title: A, description: A, channels: [email], value: 1}
  - {id: mid, title: M, description: M, channels: [email], value: 1}
"""
    catalog = parse_catalog(text, "ties.yaml")
    result = arbitrate(
        catalog,
        context(),
        Features(catalog.schema, {}, NOW),
        CustomerHistory(),
        {"zeta": 0.25, "alpha": 0.5, "mid": 0.5},  # every priority is 0.5
        top_n=2,
    )
    assert [(r.action_id, r.rank) for r in result.ranked] == [("alpha", 1), ("mid", 2), ("zeta", 3)]
    assert [r.action_id for r in result.top] == ["alpha", "mid"]


def test_top_n_larger_than_the_candidates_returns_them_all() -> None:
    assert len(run(channel=Channel.EMAIL, top_n=10).top) == 4
    with pytest.raises(InvalidArgument, match="top_n"):
        run(top_n=0)


# ---------------------------------------------------------------------------------------------
# Each filter: what it filters and the record of why


def test_channel() -> None:
    record = filtered(run(channel=Channel.EMAIL), "voice_only")
    assert record.kind is FilterKind.CHANNEL
    assert record.policy == "channels"
    assert record.rule == "goes out on voice"
    assert record.reads == {"context.channel": "email", "channels": ["voice"]}
    # Any channel accepts every action's channels.
    assert ranked(run(), "voice_only").channels == ("voice",)


@pytest.mark.parametrize(
    ("consent", "allowed"),
    [
        (Consent(), True),
        (Consent(True, NOW - DAY, "i1"), True),
        (Consent(False, NOW - DAY, "i9"), False),
    ],
)
def test_consent(consent: Consent, allowed: bool) -> None:
    result = run(history=CustomerHistory(consent=consent))
    if allowed:
        ranked(result, "promo")
        return
    record = filtered(result, "promo")
    assert record.kind is FilterKind.CONSENT and record.policy == "marketing"
    assert record.rule == "a marketing action needs consent (opt_out)"
    assert record.reads == {
        "consent.marketing": False,
        "stated_at": "2026-04-30T12:00:00+00:00",
        "interaction_id": "i9",
        "mode": "opt_out",
    }
    # Consent only gates marketing actions.
    assert isinstance(outcome_of(result, "plain"), Ranked)


def test_opt_in_needs_a_statement() -> None:
    text = """
version: 1
marketing_consent: opt_in
actions:
  - {id: promo, title: P, description: P, channels: [email], value: 1, marketing: true}
"""
    catalog = parse_catalog(text, "optin.yaml")

    def decide(consent: Consent) -> Ranked | Filtered:
        return arbitrate(
            catalog,
            context(),
            Features(catalog.schema, {}, NOW),
            CustomerHistory(consent=consent),
            {"promo": 0.5},
            top_n=1,
        ).considered[0]

    assert isinstance(decide(Consent()), Filtered)
    assert isinstance(decide(Consent(True, NOW, "i1")), Ranked)


@pytest.mark.parametrize(
    ("values", "kind", "policy", "rule", "reads"),
    [
        (
            {"profile.interaction_count": 0.0},
            FilterKind.ELIGIBILITY,
            "eligibility[0]",
            "profile.interaction_count >= 1",
            {"profile.interaction_count": 0.0},
        ),
        (
            {"memory.issues": (Event("Lost Luggage", NOW - 30 * DAY - SECOND, 0.9),)},
            FilterKind.APPLICABILITY,
            "applicability[0]",
            "count(memory.issues, 'Lost Luggage', 30d) > 0",
            {
                "memory.issues": [
                    {"label": "Lost Luggage", "at": "2026-04-01T11:59:59+00:00", "score": 0.9}
                ]
            },
        ),
        (
            {"profile.no_calls": True},
            FilterKind.SUITABILITY,
            "suitability[0]",
            "not profile.no_calls",
            {"profile.no_calls": True},
        ),
        (
            {"prediction.churn_risk": None},  # missing: the comparison is false
            FilterKind.SUITABILITY,
            "suitability[1]",
            "prediction.churn_risk < 0.9",
            {"prediction.churn_risk": None},
        ),
    ],
)
def test_rules(
    values: dict[str, FeatureValue],
    kind: FilterKind,
    policy: str,
    rule: str,
    reads: dict[str, object],
) -> None:
    assert isinstance(outcome_of(run(), "picky"), Ranked)
    record = filtered(run(features=good_features(**values)), "picky")
    assert (record.kind, record.policy, record.rule) == (kind, policy, rule)
    assert record.reads == reads


def test_the_first_failing_policy_is_the_one_recorded() -> None:
    features = good_features(**{"profile.interaction_count": 0.0, "profile.no_calls": True})
    record = filtered(run(features=features), "picky")
    assert record.kind is FilterKind.ELIGIBILITY
    # Channel comes before everything.
    history = CustomerHistory(consent=Consent(False, NOW, "i1"))
    assert filtered(run(channel=Channel.VOICE, history=history), "promo").kind is (
        FilterKind.CHANNEL
    )
    # Rules come before suppression and contact.
    busy = CustomerHistory(
        contacts=tuple(ContactEvent("picky", Channel.SMS, NOW) for _ in range(3)),
        outcomes=(),
    )
    assert filtered(run(features=features, history=busy), "picky").kind is FilterKind.ELIGIBILITY
    # Suppression comes before contact caps.
    both = CustomerHistory(
        contacts=contacts(Channel.EMAIL, DAY, DAY) + contacts(Channel.SMS, DAY),
        outcomes=rejections(2 * DAY, DAY),
    )
    assert filtered(run(history=both), "capped").kind is FilterKind.SUPPRESSION
    assert filtered(run(history=replace(both, outcomes=())), "capped").kind is FilterKind.CONTACT


def rejections(*ages: timedelta, action: str = "capped") -> tuple[OutcomeEvent, ...]:
    return tuple(OutcomeEvent(action, Outcome.REJECTED, NOW - age) for age in ages)


@pytest.mark.parametrize(
    ("second_rejection_age", "suppressed"),
    [(14 * DAY - SECOND, True), (14 * DAY, True), (14 * DAY + SECOND, False)],
)
def test_suppression(second_rejection_age: timedelta, suppressed: bool) -> None:
    history = CustomerHistory(outcomes=rejections(20 * DAY, second_rejection_age))
    result = run(history=history)
    if not suppressed:
        ranked(result, "capped")
        return
    record = filtered(result, "capped")
    assert record.kind is FilterKind.SUPPRESSION and record.policy == "suppress"
    assert record.rule == "suppressed for 2w after 2 rejections within 30d"
    second = NOW - second_rejection_age
    assert record.reads == {
        "rejections": [(NOW - 20 * DAY).isoformat(), second.isoformat()],
        "since": second.isoformat(),
        "until": (second + 14 * DAY).isoformat(),
    }


def contacts(
    channel: Channel, *ages: timedelta, action: str = "capped"
) -> tuple[ContactEvent, ...]:
    return tuple(ContactEvent(action, channel, NOW - age) for age in ages)


@pytest.mark.parametrize(
    ("oldest", "capped"),
    [(7 * DAY - SECOND, True), (7 * DAY, True), (7 * DAY + SECOND, False)],
)
def test_contact_cap_on_the_requested_channel(oldest: timedelta, capped: bool) -> None:
    history = CustomerHistory(contacts=contacts(Channel.EMAIL, oldest, DAY))
    result = run(channel=Channel.EMAIL, history=history)
    if not capped:
        assert ranked(result, "capped").channels == ("email",)
        return
    record = filtered(result, "capped")
    assert record.kind is FilterKind.CONTACT and record.policy == "contact[0]"
    assert record.rule == "at most 2 on email within 1w"
    caps = record.reads["caps"]
    assert isinstance(caps, list) and len(caps) == 1
    assert caps[0] == {
        "policy": "contact[0]",
        "cap": "at most 2 on email within 1w",
        "counted": [
            {"action_id": "capped", "channel": "email", "at": (NOW - oldest).isoformat()},
            {"action_id": "capped", "channel": "email", "at": (NOW - DAY).isoformat()},
        ],
        "until": (NOW - oldest + 7 * DAY).isoformat(),
    }


def test_a_capped_channel_leaves_the_others_open() -> None:
    history = CustomerHistory(contacts=contacts(Channel.EMAIL, 2 * DAY, DAY))
    # Any channel: the action stays, on SMS only.
    assert ranked(run(history=history), "capped").channels == ("sms",)
    # SMS asked for: the email cap does not matter.
    assert ranked(run(channel=Channel.SMS, history=history), "capped").channels == ("sms",)
    # Both capped: filtered, citing both caps.
    both = CustomerHistory(contacts=history.contacts + contacts(Channel.SMS, DAY))
    record = filtered(run(history=both), "capped")
    assert record.kind is FilterKind.CONTACT
    assert record.policy == "contact[0], contact[1]"
    assert record.rule == "at most 2 on email within 1w; at most 1 on sms within 1w"


def test_a_cap_counts_only_its_own_actions_contacts_but_a_catalog_cap_counts_all() -> None:
    others = contacts(Channel.EMAIL, DAY, DAY, action="plain")
    assert ranked(run(channel=Channel.EMAIL, history=CustomerHistory(contacts=others)), "capped")
    sms = contacts(Channel.SMS, SECOND, 2 * SECOND, action="plain") + contacts(
        Channel.SMS, 3 * SECOND, action="promo"
    )
    result = run(channel=Channel.SMS, history=CustomerHistory(contacts=sms))
    for action_id in ("plain", "picky", "promo"):
        record = filtered(result, action_id)
        assert record.kind is FilterKind.CONTACT
        assert record.policy == "catalog contact[0]"
        assert record.rule == "at most 3 on sms within 1d"
    # capped's own caps count only its own contacts (none), but the catalog's counts all.
    assert filtered(result, "capped").policy == "catalog contact[0]"


# ---------------------------------------------------------------------------------------------
# Propensities


def test_a_propensity_callable_sees_only_the_actions_that_passed() -> None:
    calls: list[tuple[str, ...]] = []

    def model(action_ids: Sequence[str]) -> dict[str, float]:
        calls.append(tuple(action_ids))
        return dict.fromkeys(action_ids, 0.5)

    history = CustomerHistory(consent=Consent(False, NOW, "i1"))
    arbitrate(CATALOG, context(Channel.EMAIL), good_features(), history, model, top_n=1)
    assert calls == [("plain", "picky", "capped")]
    calls.clear()
    arbitrate(CATALOG, context(Channel.MEETING), good_features(), CustomerHistory(), model, top_n=1)
    assert calls == []  # nothing passed: the model is not asked


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        ({"plain": 0.5}, "no propensity for action 'picky'"),
        (PROPENSITY | {"plain": 1.5}, "not in [0, 1]"),
        (PROPENSITY | {"plain": -0.1}, "not in [0, 1]"),
        (PROPENSITY | {"plain": float("nan")}, "not in [0, 1]"),
    ],
)
def test_bad_propensities_are_the_callers_bug(scores: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        arbitrate(
            CATALOG, context(Channel.EMAIL), good_features(), CustomerHistory(), scores, top_n=1
        )


def test_features_must_match_the_context_and_the_catalog() -> None:
    with pytest.raises(ValueError, match="another moment"):
        arbitrate(
            CATALOG,
            DecisionContext(Channel.EMAIL, NOW + SECOND),
            good_features(),
            CustomerHistory(),
            PROPENSITY,
            top_n=1,
        )
    other = CATALOG.schema.with_attributes({})
    assert other == CATALOG.schema
    tiered = parse_catalog(
        "version: 1\nattributes: {tier: string}\nactions:\n"
        "  - {id: plain, title: T, description: D, channels: [email], value: 1}\n",
        "tiered.yaml",
    )
    with pytest.raises(ValueError, match="another schema"):
        arbitrate(tiered, context(), good_features(), CustomerHistory(), PROPENSITY, top_n=1)


# ---------------------------------------------------------------------------------------------
# The record


def test_the_record_is_json_with_every_action() -> None:
    history = CustomerHistory(
        contacts=contacts(Channel.EMAIL, DAY, DAY),
        consent=Consent(False, NOW - DAY, "i9"),
    )
    result = run(channel=Channel.EMAIL, intent="complaint", history=history, top_n=1)
    record = json.loads(result.to_json())
    assert record["catalog_version"] == "12"
    assert record["channel"] == "email" and record["intent"] == "complaint"
    assert record["decided_at"] == "2026-05-01T12:00:00+00:00"
    assert record["top_n"] == 1
    assert record["top"] == ["plain"]
    assert [c["action_id"] for c in record["considered"]] == list(CATALOG.action_ids)
    by_id = {c["action_id"]: c for c in record["considered"]}
    assert by_id["plain"] == {
        "action_id": "plain",
        "title": "Plain",
        "status": "selected",
        "rank": 1,
        "propensity": 0.5,
        "context_weight": 0.5,
        "value": 2.0,
        "lever": 1.5,
        "priority": pytest.approx(0.75),
        "channels": ["email"],
    }
    assert by_id["picky"]["status"] == "ranked" and by_id["picky"]["rank"] == 2
    assert {c["action_id"]: c["kind"] for c in record["considered"] if "kind" in c} == {
        "promo": "consent",
        "capped": "contact",
        "voice_only": "channel",
    }
    assert by_id["promo"]["status"] == "filtered"
    assert by_id["promo"]["policy"] == "marketing"


def test_the_same_inputs_give_the_same_record() -> None:
    assert run().to_json() == run().to_json()


# ---------------------------------------------------------------------------------------------
# The built-in airline catalog, end to end over built features


def test_the_airline_catalog_on_a_customer_with_an_open_lost_bag() -> None:
    catalog = builtin_catalog()
    profile = ProfileFacts(
        interaction_count=2, open_issues=("Lost Luggage",), no_calls=True, last_seen=NOW - DAY
    )
    ctx = DecisionContext(Channel.UNSPECIFIED, NOW, "any news about my bag?")
    features = build_features(catalog.schema, ctx, profile, [])
    history = CustomerHistory(
        contacts=(ContactEvent("apology_credit", Channel.EMAIL, NOW - 10 * DAY),),
        outcomes=rejections(3 * DAY, action="escalate_to_agent"),
        consent=Consent(False, NOW - 5 * DAY, "i7"),
    )
    scores = dict.fromkeys(catalog.action_ids, 0.5)
    result = arbitrate(catalog, ctx, features, history, scores, top_n=3)
    kinds = {f.action_id: (f.kind, f.policy) for f in result.filtered}
    assert kinds == {
        "apology_credit": (FilterKind.CONTACT, "contact[0]"),  # one credit a month
        "escalate_to_agent": (FilterKind.SUITABILITY, "suitability[0]"),  # no calls
        "seat_upgrade_offer": (FilterKind.CONSENT, "marketing"),
        "loyalty_thanks": (FilterKind.SUITABILITY, "suitability[0]"),  # open issue
    }
    assert filtered(result, "loyalty_thanks").reads == {"profile.open_issues": ["Lost Luggage"]}
    # rebooking 0.5 x 3 and baggage 0.5 x 3 tie: the smaller id first.
    assert [r.action_id for r in result.top] == ["baggage_trace", "rebooking_assist"]
