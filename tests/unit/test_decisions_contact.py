"""Contact caps, suppression and consent, at their boundaries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.types import Channel, Interaction, Outcome
from memcrm.decisions.contact import (
    UNKNOWN_CONSENT,
    ContactCap,
    ContactEvent,
    OutcomeEvent,
    Suppression,
    check_cap,
    check_suppression,
    in_window,
    latest_attributes,
    marketing_consent,
    open_channels,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
WEEK = 7 * DAY


def contact(at: datetime, channel: Channel = Channel.EMAIL, action: str = "a") -> ContactEvent:
    return ContactEvent(action, channel, at)


def rejected(at: datetime, action: str = "a") -> OutcomeEvent:
    return OutcomeEvent(action, Outcome.REJECTED, at)


# ---------------------------------------------------------------------------------------------
# Windows and caps


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (NOW, True),
        (NOW - WEEK + SECOND, True),
        (NOW - WEEK, True),  # the boundary is inside
        (NOW - WEEK - SECOND, False),
        (NOW + SECOND, False),  # the future is outside
    ],
)
def test_window_is_closed(at: datetime, inside: bool) -> None:
    assert in_window(at, NOW, WEEK) is inside


@pytest.mark.parametrize(
    ("oldest", "hit"),
    [
        (NOW - WEEK + SECOND, True),
        (NOW - WEEK, True),  # a contact exactly 7 days ago still counts
        (NOW - WEEK - SECOND, False),
    ],
)
def test_a_cap_is_hit_when_max_contacts_lie_in_the_window(oldest: datetime, hit: bool) -> None:
    cap = ContactCap(max=2, within=WEEK, channel=Channel.EMAIL)
    check = check_cap(cap, [contact(oldest), contact(NOW - DAY)], NOW, action_id="a")
    assert check.hit is hit
    assert len(check.counted) == (2 if hit else 1)


def test_one_contact_under_the_cap_is_not_hit() -> None:
    cap = ContactCap(max=2, within=WEEK, channel=Channel.EMAIL)
    assert not check_cap(cap, [contact(NOW)], NOW, action_id="a").hit
    assert check_cap(cap, [contact(NOW), contact(NOW)], NOW, action_id="a").hit


def test_a_cap_counts_its_channel_its_action_and_the_past_only() -> None:
    cap = ContactCap(max=1, within=WEEK, channel=Channel.EMAIL)
    others = [
        contact(NOW - DAY, Channel.SMS),  # another channel
        contact(NOW - DAY, action="b"),  # another action
        contact(NOW + SECOND),  # after now
    ]
    assert not check_cap(cap, others, NOW, action_id="a").hit
    # A catalog-wide cap counts every action's contacts.
    assert check_cap(cap, others, NOW, action_id=None).hit
    every_channel = ContactCap(max=2, within=WEEK)
    assert check_cap(every_channel, others, NOW, action_id=None).hit
    assert not check_cap(every_channel, others, NOW, action_id="a").hit


def test_until_is_the_last_instant_the_cap_stays_hit() -> None:
    cap = ContactCap(max=2, within=WEEK)
    contacts = [contact(NOW - 3 * DAY), contact(NOW - 2 * DAY), contact(NOW - DAY)]
    check = check_cap(cap, contacts, NOW, action_id="a")
    assert check.hit and check.until == NOW - 2 * DAY + WEEK
    until = check.until
    assert check_cap(cap, contacts, until, action_id="a").hit
    assert not check_cap(cap, contacts, until + SECOND, action_id="a").hit
    assert check_cap(cap, contacts[:1], NOW, action_id="a").until is None


def test_open_channels_closes_only_what_a_hit_cap_blocks() -> None:
    candidates = {Channel.EMAIL, Channel.SMS, Channel.WEB}
    email_cap = ContactCap(max=1, within=WEEK, channel=Channel.EMAIL)
    allowance = open_channels(candidates, "a", [email_cap], [], [contact(NOW - DAY)], NOW)
    assert allowance.open == {Channel.SMS, Channel.WEB}
    assert [c.cap for c in allowance.hit] == [email_cap]
    # A catalog cap on all channels, hit by another action's contacts, closes everything.
    overall = ContactCap(max=1, within=DAY)
    allowance = open_channels(
        candidates, "a", [email_cap], [overall], [contact(NOW - SECOND, Channel.SMS, "b")], NOW
    )
    assert allowance.open == frozenset()
    assert [c.action_id for c in allowance.hit] == [None]
    nothing = open_channels(candidates, "a", [email_cap], [overall], [], NOW)
    assert nothing.open == candidates and nothing.hit == ()


def test_caps_are_validated_and_described() -> None:
    with pytest.raises(ValueError):
        ContactCap(max=0, within=WEEK)
    with pytest.raises(ValueError):
        ContactCap(max=1, within=timedelta(0))
    with pytest.raises(ValueError):
        ContactCap(max=1, within=WEEK, channel=Channel.UNSPECIFIED)
    assert ContactCap(2, WEEK, Channel.EMAIL).text == "at most 2 on email within 1w"
    assert ContactCap(3, 30 * DAY).text == "at most 3 in all within 30d"


# ---------------------------------------------------------------------------------------------
# Suppression


SUPPRESS = Suppression(after_rejections=2, duration=30 * DAY)


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (NOW, True),  # from the second rejection on
        (NOW + 30 * DAY - SECOND, True),
        (NOW + 30 * DAY, True),  # the last day is inclusive
        (NOW + 30 * DAY + SECOND, False),
        (NOW - SECOND, False),  # before the second rejection: one rejection only
    ],
)
def test_suppression_lasts_for_its_duration_after_the_mth_rejection(
    now: datetime, active: bool
) -> None:
    outcomes = [rejected(NOW - 10 * DAY), rejected(NOW)]
    check = check_suppression(SUPPRESS, outcomes, "a", now)
    assert check.active(now) is active
    if active:
        assert check.since == NOW and check.until == NOW + 30 * DAY
        assert check.trigger == (NOW - 10 * DAY, NOW)


def test_only_this_actions_rejections_count() -> None:
    outcomes = [
        rejected(NOW - DAY),
        rejected(NOW - DAY, action="b"),
        OutcomeEvent("a", Outcome.NO_RESPONSE, NOW - DAY),
        OutcomeEvent("a", Outcome.ACCEPTED, NOW - DAY),
        OutcomeEvent("a", Outcome.CONVERTED, NOW - DAY),
        rejected(NOW + SECOND),  # recorded after now: not known yet
    ]
    check = check_suppression(SUPPRESS, outcomes, "a", NOW)
    assert not check.active(NOW) and check.trigger == () and check.until is None
    assert check_suppression(SUPPRESS, outcomes, "a", NOW + SECOND).active(NOW + SECOND)


@pytest.mark.parametrize(
    ("gap", "triggers"),
    [(WEEK - SECOND, True), (WEEK, True), (WEEK + SECOND, False)],
)
def test_rejections_count_within_their_window(gap: timedelta, triggers: bool) -> None:
    policy = Suppression(after_rejections=2, duration=30 * DAY, within=WEEK)
    outcomes = [rejected(NOW - gap), rejected(NOW)]
    assert check_suppression(policy, outcomes, "a", NOW).active(NOW) is triggers


def test_the_latest_trigger_decides_and_later_rejections_suppress_again() -> None:
    outcomes = [rejected(NOW - 100 * DAY), rejected(NOW - 90 * DAY), rejected(NOW - DAY)]
    # Without a window every rejection after the 2nd suppresses again, from itself.
    check = check_suppression(SUPPRESS, outcomes, "a", NOW)
    assert check.active(NOW) and check.since == NOW - DAY
    assert check.trigger == (NOW - 90 * DAY, NOW - DAY)
    # With one, the old rejections have aged out and one fresh rejection is not enough.
    windowed = Suppression(after_rejections=2, duration=30 * DAY, within=30 * DAY)
    check = check_suppression(windowed, outcomes, "a", NOW)
    assert not check.active(NOW) and check.since == NOW - 90 * DAY


def test_one_rejection_suffices_when_m_is_one() -> None:
    policy = Suppression(after_rejections=1, duration=14 * DAY)
    assert check_suppression(policy, [rejected(NOW - 14 * DAY)], "a", NOW).active(NOW)
    assert not check_suppression(policy, [rejected(NOW - 14 * DAY - SECOND)], "a", NOW).active(NOW)


def test_suppression_is_validated_and_described() -> None:
    with pytest.raises(ValueError):
        Suppression(after_rejections=0, duration=DAY)
    with pytest.raises(ValueError):
        Suppression(after_rejections=1, duration=timedelta(0))
    with pytest.raises(ValueError):
        Suppression(after_rejections=1, duration=DAY, within=timedelta(0))
    assert SUPPRESS.text == "suppressed for 30d after 2 rejections"
    assert (
        Suppression(1, 14 * DAY, 90 * DAY).text == "suppressed for 2w after 1 rejection within 90d"
    )


# ---------------------------------------------------------------------------------------------
# Consent and attributes


def said(i: int, at: datetime, **attributes: str) -> Interaction:
    return Interaction(f"i{i}", "c1", Channel.EMAIL, at, attributes=attributes)


def consent_of(*interactions: Interaction, now: datetime = NOW) -> bool | None:
    return marketing_consent(interactions, now).marketing


def test_no_statement_is_unknown_and_allows_marketing_under_opt_out() -> None:
    consent = marketing_consent([said(1, NOW - DAY, tier="gold")], NOW)
    assert consent == UNKNOWN_CONSENT
    assert consent.allows_marketing("opt_out") and not consent.allows_marketing("opt_in")


def test_a_withdrawal_makes_marketing_ineligible_until_consent_is_given_again() -> None:
    withdrawn = said(1, NOW - 10 * DAY, **{"consent.marketing": "false"})
    given = said(2, NOW - DAY, **{"consent.marketing": "true"})
    consent = marketing_consent([withdrawn], NOW)
    assert consent.marketing is False and consent.interaction_id == "i1"
    assert consent.at == NOW - 10 * DAY
    assert not consent.allows_marketing("opt_out") and not consent.allows_marketing("opt_in")
    later = marketing_consent([given, withdrawn], NOW)  # the latest wins, whatever the order
    assert later.marketing is True and later.interaction_id == "i2"
    assert later.allows_marketing("opt_out") and later.allows_marketing("opt_in")
    again = said(3, NOW, **{"consent.marketing": "no"})
    assert consent_of(withdrawn, given, again) is False


def test_consent_given_after_now_is_not_known_yet() -> None:
    withdrawn = said(1, NOW - DAY, **{"consent.marketing": "false"})
    given = said(2, NOW + SECOND, **{"consent.marketing": "true"})
    assert consent_of(withdrawn, given) is False
    assert consent_of(withdrawn, given, now=NOW + SECOND) is True


def test_at_the_same_instant_the_withdrawal_wins() -> None:
    statements = [
        said(9, NOW, **{"consent.marketing": "true"}),
        said(1, NOW, **{"consent.marketing": "false"}),
        said(5, NOW, **{"consent.marketing": "yes"}),
    ]
    for _ in range(5):
        random.shuffle(statements)
        assert consent_of(*statements) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        (" FALSE ", False),
        ("no", False),
        ("0", False),
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("maybe", None),
        ("", None),
    ],
)
def test_consent_values(value: str, expected: bool | None) -> None:
    assert consent_of(said(1, NOW, **{"consent.marketing": value})) is expected


def test_an_unreadable_value_states_nothing() -> None:
    withdrawn = said(1, NOW - DAY, **{"consent.marketing": "false"})
    garbled = said(2, NOW, **{"consent.marketing": "perhaps"})
    assert consent_of(withdrawn, garbled) is False


def test_latest_attributes() -> None:
    interactions = [
        said(1, NOW - 2 * DAY, tier="silver", city="Oslo"),
        said(2, NOW - DAY, tier="gold"),
        said(4, NOW - DAY, city="Bergen"),
        said(3, NOW - DAY, city="Tromso"),  # same instant as i4: the greater id wins
        said(5, NOW + SECOND, tier="platinum"),  # after now
    ]
    latest = latest_attributes(interactions, NOW)
    assert {k: (v.value, v.interaction_id) for k, v in latest.items()} == {
        "tier": ("gold", "i2"),
        "city": ("Bergen", "i4"),
    }
    assert set(latest_attributes(reversed(interactions), NOW, keys={"tier"})) == {"tier"}
    assert latest_attributes(reversed(interactions), NOW) == latest


def test_naive_times_are_refused() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError):
        marketing_consent([], naive)
    with pytest.raises(ValueError):
        check_cap(ContactCap(1, DAY), [], naive, action_id=None)
    with pytest.raises(ValueError):
        check_suppression(SUPPRESS, [], "a", naive)
