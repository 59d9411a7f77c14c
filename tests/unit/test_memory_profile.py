"""The profile fold and its rendering, on hand-built memories (no stores)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from memcrm.core.types import (
    Channel,
    CustomerProfile,
    Direction,
    Enrichment,
    Interaction,
    Label,
    Memory,
    TraceRef,
)
from memcrm.memory.profile import (
    POINTS_KEPT,
    SCHEMA,
    TREND_THRESHOLD,
    ProfileState,
    day,
    dump_state,
    fold,
    fold_all,
    follows,
    load_state,
    order_key,
    render,
    stated_preferences,
)

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")


def mem(
    n: int,
    text: str = "hello",
    *,
    sentiment: str | None = None,
    score: float = 0.0,
    issue: str | None = None,
    objections: Iterable[str] = (),
    intent: tuple[str, float] | None = None,
    channel: Channel = Channel.EMAIL,
    direction: Direction = Direction.INBOUND,
    thread: str = "",
    attributes: dict[str, str] | None = None,
    days: float | None = None,
    version: int = 1,
) -> Memory:
    """Memory ``m<n>`` on day ``n`` (or ``days``) after T0."""
    at = T0 + timedelta(days=n if days is None else days)
    interaction = Interaction(
        interaction_id=f"i{n}",
        customer_id="alice",
        channel=channel,
        occurred_at=at,
        direction=direction,
        text=text,
        thread_id=thread,
        attributes=attributes or {},
    )
    enrichment = Enrichment(
        model_version="test",
        sentiment=Label(sentiment, 0.9) if sentiment else None,
        sentiment_score=score,
        intents=(Label(*intent),) if intent else (),
        issue=Label(issue, 0.9) if issue else None,
        objections=tuple(Label(o, 0.8) for o in objections),
    )
    return Memory(f"m{n:03d}", interaction, enrichment, at, TRACE, version)


def complaint(n: int, issue: str = "Lost Luggage", **kw: Any) -> Memory:
    return mem(
        n, f"complaint {n} about {issue}", sentiment="negative", score=-0.8, issue=issue, **kw
    )


def profile(memories: Iterable[Memory]) -> CustomerProfile:
    return render(fold_all(memories), "alice", AS_OF)


def cited(p: CustomerProfile) -> set[str]:
    ids = {i for item in (*p.open_issues, *p.objections, *p.preferences) for i in item.memory_ids}
    ids |= {c.memory_id for c in p.last_contact}
    ids |= {x.memory_id for x in p.sentiment_trend.points}
    return ids


# --- open issues --------------------------------------------------------------------------


def test_complaints_about_one_issue_form_one_open_item_citing_each() -> None:
    p = profile([complaint(0), complaint(2), complaint(1, "Late Flight")])
    assert [i.memory_ids for i in p.open_issues] == [("m000", "m002"), ("m001",)]
    lost = p.open_issues[0].text
    assert lost.startswith("Lost Luggage, open since 3 March 2026 (2 messages): ")
    assert "complaint 2 about Lost Luggage" in lost  # quotes the latest complaint
    assert "Open issues: Lost Luggage since 3 March 2026, Late Flight since 4 March 2026." in (
        p.summary
    )


def test_a_thread_less_positive_message_resolves_nothing() -> None:
    p = profile([complaint(0), mem(1, "the crew were lovely", sentiment="positive", score=0.9)])
    assert [i.memory_ids for i in p.open_issues] == [("m000",)]


def test_a_positive_reply_in_the_thread_resolves_the_thread_and_a_later_complaint_reopens() -> None:
    history = [
        complaint(0, thread="t1"),
        complaint(1, "Late Flight", thread="t2"),
        mem(2, "found it, thanks!", sentiment="positive", score=0.9, thread="t1"),
    ]
    p = profile(history)
    assert [i.text.split(",")[0] for i in p.open_issues] == ["Late Flight"]
    p = profile([*history[:1], history[2]])
    assert p.open_issues == ()
    assert "No open issues (1 resolved)." in p.summary
    p = profile([*history, complaint(5)])
    assert [i.memory_ids for i in p.open_issues] == [("m001",), ("m005",)]
    assert "Lost Luggage, open since 8 March 2026 (1 message)" in p.open_issues[1].text


def test_a_complaint_in_a_known_thread_joins_its_group_whatever_its_label() -> None:
    p = profile([complaint(0, thread="t1"), complaint(1, "Customer Service Issue", thread="t1")])
    assert [i.memory_ids for i in p.open_issues] == [("m000", "m001")]


OUT = Direction.OUTBOUND
EVERY_ISSUE = ["Lost Luggage", "Late Flight", "Bad Flight"]


@pytest.mark.parametrize(
    ("resolution", "still_open"),
    [
        # Marked resolved in the thread: only that thread's group closes.
        (
            mem(5, "ok", direction=OUT, thread="t1", attributes={"status": "Closed"}),
            ["Late Flight", "Bad Flight"],
        ),
        # Marked resolved naming the issue.
        (
            mem(5, "ok", direction=OUT, attributes={"resolution": "fixed", "issue": "Bad Flight"}),
            ["Lost Luggage", "Late Flight"],
        ),
        # Marked resolved with neither thread nor issue: every group without a thread.
        (
            mem(5, "ok", channel=Channel.TICKET, attributes={"ticket_status": "solved"}),
            ["Lost Luggage"],
        ),
        # Not a resolution: an outbound positive message, or another status.
        (mem(5, "glad to help", direction=OUT, sentiment="positive", thread="t1"), EVERY_ISSUE),
        (mem(5, "ok", attributes={"status": "open"}, thread="t1"), EVERY_ISSUE),
    ],
)
def test_what_resolves_which_issue(resolution: Memory, still_open: list[str]) -> None:
    history = [complaint(0, thread="t1"), complaint(1, "Late Flight"), complaint(2, "Bad Flight")]
    p = profile([*history, resolution])
    assert [i.text.split(",")[0] for i in p.open_issues] == still_open


def test_a_resolution_before_the_complaint_does_not_resolve_it() -> None:
    p = profile([mem(0, "ok", attributes={"status": "resolved"}), complaint(1)])
    assert len(p.open_issues) == 1


@pytest.mark.parametrize(
    ("memory", "name"),
    [
        (complaint(0), "Lost Luggage"),
        (complaint(0, "longlines"), "Long lines"),
        (mem(0, "x", sentiment="negative", intent=("card_not_working", 0.9)), "Card not working"),
        (mem(0, "x", sentiment="negative", intent=("Refund_not_showing_up", 0.7)),
         "Refund not showing up"),
        (mem(0, "x", sentiment="negative", intent=("card_not_working", 0.3)), None),
        (mem(0, "x", sentiment="negative", intent=("exchange_rate", 0.9)), None),
        (mem(0, "x", sentiment="neutral", intent=("card_not_working", 0.9)), None),
        (complaint(0, "Can't Tell"), "Unspecified complaint"),
        (complaint(0, "Can't Tell", objections=["price"]), None),
        (complaint(0, direction=Direction.OUTBOUND), None),
        (complaint(0, direction=Direction.UNSPECIFIED), "Lost Luggage"),
    ],
)  # fmt: skip
def test_what_counts_as_a_complaint(memory: Memory, name: str | None) -> None:
    p = profile([memory])
    assert [i.text.split(",")[0] for i in p.open_issues] == ([name] if name else [])


def test_a_long_running_issue_cites_its_first_and_latest_complaints() -> None:
    p = profile([complaint(n) for n in range(30)])
    (item,) = p.open_issues
    assert "(30 messages)" in item.text
    assert item.memory_ids == ("m000", *(f"m{n:03d}" for n in range(11, 30)))


# --- objections ---------------------------------------------------------------------------


def test_objections_are_counted_per_label_most_raised_first() -> None:
    p = profile(
        [
            mem(0, "too pricey", objections=["price"]),
            mem(1, "not now, maybe next year", objections=["timing"]),
            mem(2, "Globex is cheaper", objections=["price", "competitor"]),
            mem(3, "our price is fair", direction=Direction.OUTBOUND, objections=["price"]),
        ]
    )
    assert [(i.text, i.memory_ids) for i in p.objections] == [
        ("Price objection raised twice, last on 5 March 2026: “Globex is cheaper”", ("m000", "m002")),  # noqa: E501
        ("Competitor objection raised once, last on 5 March 2026: “Globex is cheaper”", ("m002",)),
        ("Timing objection raised once, last on 4 March 2026: “not now, maybe next year”", ("m001",)),  # noqa: E501
    ]  # fmt: skip
    assert (
        "Objections raised: price (2\u00d7), competitor (1\u00d7), timing (1\u00d7)." in p.summary
    )


# --- preferences --------------------------------------------------------------------------


NONE = Channel.UNSPECIFIED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Please contact me by email from now on.", [("channel", Channel.EMAIL)]),
        ("You can reach me on my phone after 5.", [("channel", Channel.VOICE)]),
        ("only email me please", [("channel", Channel.EMAIL)]),
        ("Text me only, I'm in meetings all day", [("channel", Channel.SMS)]),
        ("I prefer email.", [("channel", Channel.EMAIL)]),
        ("I\u2019d rather be contacted by chat", [("channel", Channel.CHAT)]),
        ("I would prefer a phone call", [("channel", Channel.VOICE)]),
        ("Please don't call me at work", [("no_calls", Channel.UNSPECIFIED)]),
        ("STOP CALLING ME", [("no_calls", Channel.UNSPECIFIED)]),
        ("no more phone calls", [("no_calls", Channel.UNSPECIFIED)]),
        ("I'd rather not be called", [("no_calls", Channel.UNSPECIFIED)]),
        ("I prefer aisle seats; thanks", [("stated", Channel.UNSPECIFIED)]),
        (
            "Don't call me. Contact me via email. I'd rather fly from JFK.",
            [("no_calls", NONE), ("channel", Channel.EMAIL), ("stated", NONE)],
        ),
        ("Please call me back tomorrow", []),
        ("Can you email me the receipt?", []),
        ("What do you prefer?", []),
        ("I prefer", []),
    ],
)  # fmt: skip
def test_stated_preference_patterns(text: str, expected: list[tuple[str, Channel]]) -> None:
    assert [(s.kind, s.channel) for s in stated_preferences(text)] == expected


def test_preferences_keep_the_latest_per_kind_and_cite_it() -> None:
    p = profile(
        [
            mem(0, "Please contact me by email.", channel=Channel.CHAT),
            mem(1, "Actually, reach me by text.", channel=Channel.CHAT),
            mem(2, "Please don't call me", channel=Channel.CHAT),
            mem(3, "I prefer aisle seats", channel=Channel.CHAT),
            mem(4, "I'd rather fly in the morning", channel=Channel.CHAT),
            mem(5, "contact me by email", direction=Direction.OUTBOUND),
        ]
    )
    assert [(i.text, i.memory_ids) for i in p.preferences] == [
        ("Prefers to be contacted by SMS (said on 4 March 2026): “reach me by text”", ("m001",)),
        ("Does not want phone calls (said on 5 March 2026): “Please don't call me”", ("m002",)),
        ("Stated preference (on 7 March 2026): “I'd rather fly in the morning”", ("m004",)),
        ("Stated preference (on 6 March 2026): “I prefer aisle seats”", ("m003",)),
        ("Mostly writes by chat (5 of 5 messages)", ("m000", "m001", "m002", "m003", "m004")),
    ]  # fmt: skip
    assert "Preferences: asked to be contacted by SMS; asked not to be called;" in p.summary


def test_a_later_phone_preference_replaces_no_calls_and_vice_versa() -> None:
    def stated(memories: list[Memory]) -> list[str]:
        items = profile(memories).preferences
        return [i.text.split(" (")[0] for i in items if not i.text.startswith("Mostly")]

    no_calls = mem(0, "please don't call me")
    phone = mem(1, "call me only, I never read email")
    assert stated([no_calls, phone]) == ["Prefers to be contacted by phone"]
    assert stated([no_calls, phone, mem(2, "stop calling me")]) == ["Does not want phone calls"]


@pytest.mark.parametrize(
    ("channels", "mostly"),
    [
        ([Channel.EMAIL, Channel.EMAIL], None),  # too few messages to say
        ([Channel.EMAIL, Channel.EMAIL, Channel.CHAT], "Mostly writes by email (2 of 3 messages)"),
        ([Channel.EMAIL, Channel.EMAIL, Channel.CHAT, Channel.CHAT], None),  # no majority
        ([Channel.SOCIAL, Channel.PURCHASE, Channel.PURCHASE, Channel.SOCIAL, Channel.SOCIAL],
         "Mostly writes by social media (3 of 3 messages)"),
    ],
)  # fmt: skip
def test_the_channel_used_most_is_a_preference_once_there_is_a_majority(
    channels: list[Channel], mostly: str | None
) -> None:
    p = profile([mem(n, "hi", channel=c) for n, c in enumerate(channels)])
    assert [i.text for i in p.preferences] == ([mostly] if mostly else [])
    assert ("mostly by" in p.summary) == (mostly is not None)


# --- sentiment trend ----------------------------------------------------------------------


def scored(scores: list[float]) -> list[Memory]:
    return [mem(n, "x", sentiment="neutral", score=s) for n, s in enumerate(scores)]


@pytest.mark.parametrize(
    ("scores", "direction", "recent", "previous"),
    [
        ([], "unknown", 0.0, 0.0),
        ([0.4], "unknown", 0.4, 0.0),
        ([-0.5, 0.5], "improving", 0.5, -0.5),
        ([0.5, -0.5, -0.6], "steady", -0.6, -0.5),  # the last one against the one before
        ([0.5, 0.5, -0.6], "worsening", -0.6, 0.5),
        ([0.1, 0.1 + TREND_THRESHOLD - 0.01], "steady", 0.1 + TREND_THRESHOLD - 0.01, 0.1),
        # The last five against the five before them; the first two do not count.
        ([-1, -1] + [0.5] * 5 + [-0.2] * 5, "worsening", -0.2, 0.5),
    ],
)
def test_sentiment_trend(
    scores: list[float], direction: str, recent: float, previous: float
) -> None:
    trend = profile(scored(scores)).sentiment_trend
    assert trend.direction == direction
    assert trend.recent == pytest.approx(recent)
    assert trend.previous == pytest.approx(previous)
    assert [p.score for p in trend.points] == scores


def test_the_trend_reads_the_customers_messages_only_and_keeps_the_latest_points() -> None:
    memories = scored([0.0] * (POINTS_KEPT + 3))
    memories.append(mem(99, "so sorry", direction=Direction.OUTBOUND, sentiment="negative"))
    memories.append(mem(98, "no sentiment"))
    trend = profile(memories).sentiment_trend
    assert len(trend.points) == POINTS_KEPT
    assert trend.points[0].memory_id == "m003"
    assert {p.memory_id for p in trend.points}.isdisjoint({"m099", "m098"})


def test_summary_states_the_trend() -> None:
    p = profile(scored([0.1, 0.2, -0.6, -0.6]))
    assert "Sentiment is worsening (-0.60 recently vs +0.15 before)." in p.summary


# --- the whole profile --------------------------------------------------------------------


def history(seed: int, n: int = 60) -> list[Memory]:
    """A random but reproducible mix of everything the fold reads."""
    rng = random.Random(seed)
    texts = ["hi", "contact me by email", "please don't call me", "I prefer window seats", "ok"]
    out = []
    for i in range(n):
        out.append(
            mem(
                i,
                rng.choice(texts),
                sentiment=rng.choice([None, "negative", "neutral", "positive"]),
                score=round(rng.uniform(-1, 1), 3),
                issue=rng.choice([None, None, "Lost Luggage", "Late Flight", "Can't Tell"]),
                objections=rng.sample(["price", "timing", "trust"], rng.randint(0, 2)),
                channel=rng.choice([Channel.EMAIL, Channel.CHAT, Channel.VOICE]),
                direction=rng.choice([Direction.INBOUND, Direction.OUTBOUND]),
                thread=rng.choice(["", "t1", "t2"]),
                attributes=rng.choice([{}, {}, {"status": "resolved"}]),
                days=rng.randint(0, 20) + rng.random(),
            )
        )
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_cited_memory_id_is_one_of_the_input(seed: int) -> None:
    memories = history(seed)
    p = profile(memories)
    assert cited(p)  # the history is rich enough to cite something
    assert cited(p) <= {m.memory_id for m in memories}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_fold_is_deterministic_and_order_independent_and_survives_json(seed: int) -> None:
    memories = history(seed)
    shuffled = memories[:]
    random.Random(seed + 100).shuffle(shuffled)
    state = fold_all(memories)
    assert fold_all(shuffled) == state
    assert profile(shuffled) == profile(memories)
    assert render(through_json(state), "alice", AS_OF) == render(state, "alice", AS_OF)


def through_json(state: ProfileState) -> ProfileState:
    again = load_state(dump_state(state))
    assert again is not None
    return again


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folding_one_at_a_time_through_json_equals_folding_all(seed: int) -> None:
    """What the cache does at each ingestion gives what a rebuild gives."""
    ordered = sorted(history(seed), key=order_key)
    state = ProfileState()
    for m in ordered:
        assert follows(state, m)
        state = through_json(fold(state, m))
    assert render(state, "alice", AS_OF) == profile(ordered)
    assert not follows(state, ordered[0])
    assert not follows(state, ordered[-1])


def test_fold_leaves_its_input_state_alone() -> None:
    state = fold_all([complaint(0)])
    snapshot = dump_state(state)
    fold(state, complaint(1))
    assert dump_state(state) == snapshot


def test_contact_facts_and_summary() -> None:
    p = profile(
        [
            mem(0, "hi", channel=Channel.EMAIL),
            mem(1, "hi", channel=Channel.CHAT),
            mem(2, "hello", channel=Channel.EMAIL, direction=Direction.OUTBOUND),
        ]
    )
    assert p.interaction_count == 3
    assert (p.first_seen, p.last_seen) == (T0, T0 + timedelta(days=2))
    assert [(c.channel, c.memory_id) for c in p.last_contact] == [
        (Channel.EMAIL, "m002"),
        (Channel.CHAT, "m001"),
    ]
    assert p.summary == "In touch 3 times since 3 March 2026; last on 5 March 2026 by email."
    assert p.as_of == AS_OF and p.customer_id == "alice" and p.predictions == ()
    single = profile([mem(0, "hi", channel=Channel.SOCIAL)])
    assert single.summary == "In touch once, on 3 March 2026 by social media."


def test_times_are_reported_in_utc() -> None:
    elsewhere = timezone(timedelta(hours=9))
    m = mem(0, "hi")
    m = replace(m, interaction=replace(m.interaction, occurred_at=T0.astimezone(elsewhere)))
    p = profile([m])
    assert p.first_seen is not None and p.first_seen.utcoffset() == timedelta(0)
    assert day(datetime(2026, 12, 31, 23, 30, tzinfo=elsewhere)) == "31 December 2026"


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "{}", '{"schema": 1, "interaction_count": "many"}', "[1, 2]"]
)
def test_malformed_or_empty_states_are_refused(raw: str | None) -> None:
    assert load_state(raw) is None
    assert load_state(dump_state(ProfileState())) is None


def test_states_of_other_rules_are_refused() -> None:
    state = fold_all([complaint(0)])
    assert load_state(dump_state(state)) == state
    assert load_state(dump_state(replace(state, schema=SCHEMA + 1))) is None
