"""The rule language: parsing, type checking, evaluation and the features it reads."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.errors import ConfigError
from memcrm.core.types import (
    Channel,
    Direction,
    Enrichment,
    Interaction,
    Label,
    Memory,
    TraceRef,
)
from memcrm.decisions import policy
from memcrm.decisions.policy import (
    BASE_SCHEMA,
    DecisionContext,
    Event,
    Features,
    FeatureValue,
    ProfileFacts,
    RuleError,
    Type,
    build_features,
    format_duration,
    parse_duration,
    parse_rule,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def features(values: dict[str, FeatureValue] | None = None, **kw: FeatureValue) -> Features:
    return Features(BASE_SCHEMA, {**(values or {}), **kw}, NOW)


def holds(rule: str, values: dict[str, FeatureValue] | None = None) -> bool:
    return parse_rule(rule).holds(features(values))


def ev(label: str, ago: timedelta, score: float = 0.0) -> Event:
    return Event(label, NOW - ago, score)


# ---------------------------------------------------------------------------------------------
# Literals, operators, precedence


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("1 < 2", True),
        ("2 < 2", False),
        ("2 <= 2", True),
        ("2.5 > 2.25", True),
        ("2 >= 2", True),
        ("1.9 >= 2", False),
        ("-1 < 0", True),
        ("- 1.5 == -1.5", True),
        ("'a' == 'a'", True),
        ('"a" != "b"', True),
        ("'it\\'s' == \"it's\"", True),
        ("'back\\\\slash' == 'back\\\\' + ''", None),  # '+' is not in the language
        ("true == true", True),
        ("true != false", True),
        ("'b' in ['a', 'b']", True),
        ("'c' in ['a', 'b']", False),
        ("'c' not in ['a', 'b']", True),
        ("2 in [1, 2.0]", True),
        ("'lost' in 'my bag is lost'", True),
        ("'Lost' in 'my bag is lost'", False),
        ("contains('my bag is lost', 'bag')", True),
        ("contains(['a'], 'b')", False),
    ],
)
def test_literals_and_operators(rule: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(RuleError):
            parse_rule(rule)
        return
    assert holds(rule) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # and binds tighter than or; not tighter than and
        ("true or true and false", True),
        ("(true or true) and false", False),
        ("not false and false", False),
        ("not (false and false)", True),
        ("not not true", True),
        ("false or false or true", True),
        ("true and true and false", False),
        ("not 1 > 2", True),  # not applies to the comparison
    ],
)
def test_precedence(rule: str, expected: bool) -> None:
    assert holds(rule) is expected


def test_whitespace_and_newlines_are_ignored() -> None:
    assert holds("  1\n<\t2  ")


# ---------------------------------------------------------------------------------------------
# Missing values: documented, never an exception


@pytest.mark.parametrize(
    "rule",
    [
        "prediction.churn_risk > 0.5",
        "prediction.churn_risk < 0.5",
        "prediction.churn_risk >= 0",
        "prediction.churn_risk <= 1",
        "prediction.churn_risk == 0.5",
        "prediction.churn_risk != 0.5",
        "context.intent in ['a', 'b']",
        "context.intent not in ['a', 'b']",
        "context.intent == context.intent",
        "consent.marketing == false",
        "consent.marketing != true",
        "consent.marketing",
        "consent.marketing and true",
        "mean(memory.sentiment) < 0",
        "days_since(profile.last_seen) >= 0",
        "days_since(memory.issues, 'Bad Flight') >= 0",
        "contains(context.intent, 'x')",
        "known(prediction.churn_risk)",
        "any(memory.objections)",
        "count(memory.issues, context.intent) > 0",  # a missing label matches nothing
    ],
)
def test_a_missing_value_makes_the_rule_false(rule: str) -> None:
    f = Features(BASE_SCHEMA, {"memory.issues": (ev("Lost Luggage", DAY),)}, NOW)
    assert f["prediction.churn_risk"] is None and f["consent.marketing"] is None
    assert parse_rule(rule).holds(f) is False


@pytest.mark.parametrize(
    "rule",
    [
        "not (prediction.churn_risk > 0.5)",
        "not consent.marketing",
        "consent.marketing or true",
        "not known(prediction.churn_risk)",
        "count(memory.issues) == 0",
        "count(profile.open_issues) == 0",
        "not any(memory.issues)",
    ],
)
def test_missing_values_under_not_or_and_counts(rule: str) -> None:
    assert parse_rule(rule).holds(Features(BASE_SCHEMA, {}, NOW)) is True


def test_known_values_make_the_same_rules_true() -> None:
    f = features({"prediction.churn_risk": 0.7, "consent.marketing": False})
    assert parse_rule("prediction.churn_risk > 0.5").holds(f)
    assert parse_rule("consent.marketing == false").holds(f)
    assert parse_rule("known(prediction.churn_risk)").holds(f)


# ---------------------------------------------------------------------------------------------
# Functions and windows


def test_count_any_and_labels() -> None:
    issues = (ev("Lost Luggage", 2 * DAY), ev("Late Flight", DAY), ev("Lost Luggage", DAY))
    f = features({"memory.issues": issues, "profile.open_issues": ("Lost Luggage", "Bad Flight")})
    assert parse_rule("count(memory.issues) == 3").holds(f)
    assert parse_rule("count(memory.issues, 'Lost Luggage') == 2").holds(f)
    assert parse_rule("count(memory.issues, ['Lost Luggage', 'Late Flight']) == 3").holds(f)
    assert parse_rule("count(memory.issues, 'lost luggage') == 0").holds(f)  # case-sensitive
    assert parse_rule("any(memory.issues, 'Late Flight')").holds(f)
    assert not parse_rule("any(memory.issues, 'Bad Flight')").holds(f)
    assert parse_rule("count(profile.open_issues, 'Bad Flight') == 1").holds(f)
    assert parse_rule("any(profile.open_issues)").holds(f)
    assert parse_rule("count(memory.issues, profile.open_issues) == 2").holds(f)


@pytest.mark.parametrize(
    ("ago", "inside"),
    [
        (timedelta(0), True),  # now
        (30 * DAY - SECOND, True),
        (30 * DAY, True),  # exactly at the start of the window: inside
        (30 * DAY + SECOND, False),
        (-SECOND, False),  # after now: never counted
    ],
)
def test_window_is_closed_at_both_ends(ago: timedelta, inside: bool) -> None:
    f = features({"memory.issues": (ev("Lost Luggage", ago),)})
    assert parse_rule("any(memory.issues, 'Lost Luggage', 30d)").holds(f) is inside
    assert parse_rule("count(memory.issues, 30d) == 1").holds(f) is inside


def test_mean_and_days_since() -> None:
    sentiment = (
        ev("negative", 10 * DAY, -0.8),
        ev("negative", 2 * DAY, -0.6),
        ev("positive", DAY, 0.5),
    )
    f = features({"memory.sentiment": sentiment, "profile.last_seen": NOW - timedelta(hours=36)})
    assert parse_rule("mean(memory.sentiment) > -0.31 and mean(memory.sentiment) < -0.29").holds(f)
    assert parse_rule("mean(memory.sentiment, 'negative') == -0.7").holds(f)
    assert parse_rule("mean(memory.sentiment, 7d) > -0.051").holds(f)
    assert parse_rule("mean(memory.sentiment, 7d) < -0.049").holds(f)
    assert parse_rule("days_since(profile.last_seen) == 1.5").holds(f)
    assert parse_rule("days_since(memory.sentiment, 'negative') == 2").holds(f)
    assert parse_rule("days_since(memory.sentiment) == 1").holds(f)
    assert not parse_rule("known(days_since(memory.sentiment, 'neutral'))").holds(f)


def test_windows_accept_every_unit() -> None:
    f = features({"memory.intents": (ev("x", timedelta(minutes=90)),)})
    assert not parse_rule("any(memory.intents, 1h)").holds(f)
    assert parse_rule("any(memory.intents, 2h)").holds(f)
    assert parse_rule("any(memory.intents, 90m)").holds(f)
    assert not parse_rule("any(memory.intents, 5399s)").holds(f)
    assert parse_rule("any(memory.intents, 1w)").holds(f)


# ---------------------------------------------------------------------------------------------
# Errors at parse time: where, which column, what was expected


@pytest.mark.parametrize(
    ("rule", "position", "problem"),
    [
        ("profile.interaction_count >= ", 29, "expected a value"),
        ("profile.interaction_count >= 1 and", 34, "expected a value"),
        ("count(memory.issues", 19, "expected ',' or ')'"),
        ("(1 < 2", 6, "expected ')'"),
        ("1 < 2)", 5, "expected 'and', 'or' or the end of the rule"),
        ("1 < 2 3", 6, "expected 'and', 'or'"),
        ("a = 1", 2, "use '=='"),
        ("1 < 2 && true", 6, "use 'and'"),
        ("1 < 2 || true", 6, "use 'or'"),
        ("!true", 0, "use 'not'"),
        ("1 < 2 < 3", 6, "do not chain"),
        ("30x > 1", 0, "neither a number nor a duration"),
        ("1.5d > 1", 0, "neither a number nor a duration"),
        ("'abc == 'abc'", 12, "unterminated string"),
        ("'a\\n' == 'a'", 2, "unknown escape"),
        ("profile.open_issue == 1", 0, "did you mean 'profile.open_issues'"),
        ("customer.tier == 'gold'", 0, "features start with"),
        ("attribute.tier == 'gold'", 0, "unknown feature"),
        ("foo(1) == 1", 0, "unknown function 'foo'"),
        ("__import__('os') == 1", 0, "unknown function"),
        ("profile.__class__ == 1", 0, "unknown feature"),
        ("1 + 1 == 2", 2, "unexpected '+'"),
        ("\u0663 > 1", 0, "unexpected '\u0663'"),  # only ASCII digits are numbers
        ("profile.interaction_count", 0, "must be a condition"),
        ("profile.interaction_count == 'a'", 26, "not a number with a string"),
        ("context.channel < 'b'", 16, "compares two numbers"),
        ("memory.issues > 1", 14, "read events and times with count"),
        ("profile.last_seen == profile.first_seen", 18, "read events and times"),
        ("1 in ['a']", 2, "not a number in a list of strings"),
        ("profile.interaction_count and true", 0, "'and' needs a condition"),
        ("not 1", 4, "'not' needs a condition"),
        ("[] == 1", 0, "empty list"),
        ("[1, 'a'] == 1", 0, "only strings or only numbers"),
        ("['a', 30d] == 1", 6, "expected a number or a string"),
        ("30d == 30d", 4, "compares two numbers, strings or bools"),
        ("0d == 1", 0, "longer than zero"),
        ("- 'a' == 1", 2, "expected a number after '-'"),
        ("count() == 0", 0, "takes at least 1 argument"),
        ("count(memory.issues, 30d, 'x') == 0", 0, "labels then a window"),
        ("count(profile.open_issues, 30d) == 0", 0, "a window needs events"),
        ("mean(profile.open_issues) == 0", 0, "first argument must be events"),
        ("days_since(profile.last_seen, 'x') == 0", 0, "wrong arguments"),
        ("known(1, 2)", 0, "takes 1 argument"),
        ("contains(1, 'a')", 0, "wrong arguments"),
        ("in", 0, "found keyword 'in'"),
        ("not in ['a']", 4, "found keyword 'in'"),
        ("", 0, "must not be empty"),
    ],
)
def test_parse_errors_name_the_rule_the_column_and_the_problem(
    rule: str, position: int, problem: str
) -> None:
    where = "acme.yaml: actions[0] (apology_credit).eligibility[1]"
    with pytest.raises(RuleError) as info:
        parse_rule(rule, where=where)
    err = info.value
    assert isinstance(err, ConfigError)
    assert problem in err.problem, err.message
    assert err.position == position, err.message
    assert err.message.startswith(f"{where}: at column {position + 1} of {rule!r}: ")


def test_nesting_and_length_are_bounded() -> None:
    deep = "(" * 40 + "true" + ")" * 40
    with pytest.raises(RuleError, match="nested deeper than 32"):
        parse_rule(deep)
    assert parse_rule("(" * 30 + "true" + ")" * 30).holds(features())
    with pytest.raises(RuleError, match="nested deeper"):
        parse_rule("not " * 40 + "true")
    with pytest.raises(RuleError, match="longer than 2000"):
        parse_rule("true or " * 300 + "true")


def test_rule_errors_cross_process_boundaries() -> None:
    with pytest.raises(RuleError) as info:
        parse_rule("1 <", where="x")
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, RuleError)
    assert (copy.where, copy.rule, copy.position, copy.message) == (
        "x",
        "1 <",
        3,
        info.value.message,
    )


def test_declared_attributes_become_features() -> None:
    schema = BASE_SCHEMA.with_attributes({"tier": Type.STRING, "loyalty.years": Type.NUMBER})
    rule = parse_rule("attribute.tier == 'gold' and attribute.loyalty.years >= 3", schema)
    assert rule.features == ("attribute.tier", "attribute.loyalty.years")
    assert schema.attributes == {"tier": Type.STRING, "loyalty.years": Type.NUMBER}
    with pytest.raises(RuleError, match="not a string with a number"):
        parse_rule("attribute.tier == 3", schema)
    with pytest.raises(ValueError, match="not string, number or bool"):
        BASE_SCHEMA.with_attributes({"x": Type.EVENTS})


def test_rule_reads_the_values_of_its_features_as_json() -> None:
    rule = parse_rule(
        "count(memory.issues, 'Lost Luggage', 30d) > 0 and prediction.churn_risk > 0.5 "
        "and days_since(profile.last_seen) < 3 and count(memory.issues) < 9"
    )
    assert rule.features == ("memory.issues", "prediction.churn_risk", "profile.last_seen")
    f = features({"memory.issues": (ev("Lost Luggage", DAY, 0.9),), "profile.last_seen": NOW})
    reads = rule.reads(f)
    assert reads == {
        "memory.issues": [
            {"label": "Lost Luggage", "at": "2026-04-30T12:00:00+00:00", "score": 0.9}
        ],
        "prediction.churn_risk": None,
        "profile.last_seen": "2026-05-01T12:00:00+00:00",
    }
    json.dumps(reads, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Features


def test_features_check_their_values_against_the_schema() -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        Features(BASE_SCHEMA, {"profile.nope": 1.0}, NOW)
    with pytest.raises(ValueError, match="must be number"):
        Features(BASE_SCHEMA, {"profile.interaction_count": 3}, NOW)  # ints are not numbers
    with pytest.raises(ValueError, match="must be number"):
        Features(BASE_SCHEMA, {"profile.interaction_count": True}, NOW)
    with pytest.raises(ValueError, match="must be number"):
        Features(BASE_SCHEMA, {"profile.interaction_count": float("nan")}, NOW)
    with pytest.raises(ValueError, match="must be bool"):
        Features(BASE_SCHEMA, {"profile.no_calls": 1.0}, NOW)
    with pytest.raises(ValueError, match="must be time"):
        Features(BASE_SCHEMA, {"profile.last_seen": datetime(2026, 1, 1)}, NOW)
    with pytest.raises(ValueError, match="must be events"):
        Features(BASE_SCHEMA, {"memory.issues": ("Lost Luggage",)}, NOW)
    with pytest.raises(ValueError, match="list of strings"):
        Features(BASE_SCHEMA, {"profile.open_issues": ["a"]}, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        Features(BASE_SCHEMA, {}, datetime(2026, 1, 1))
    f = Features(BASE_SCHEMA, {}, NOW)
    assert set(f) == set(BASE_SCHEMA) and all(v is None for v in f.values())


def memory(
    i: int,
    ago: timedelta,
    *,
    direction: Direction = Direction.INBOUND,
    channel: Channel = Channel.EMAIL,
    issue: str = "",
    sentiment: str = "",
    score: float = 0.0,
    intent: str = "",
    objections: tuple[str, ...] = (),
) -> Memory:
    return Memory(
        memory_id=f"m{i}",
        interaction=Interaction(f"i{i}", "c1", channel, NOW - ago, direction, f"text {i}"),
        enrichment=Enrichment(
            "v1",
            sentiment=Label(sentiment, 0.9) if sentiment else None,
            sentiment_score=score,
            intents=(Label(intent, 0.8), Label("other", 0.1)) if intent else (),
            issue=Label(issue, 0.7) if issue else None,
            objections=tuple(Label(o, 0.6) for o in objections),
            importance=0.25,
        ),
        recorded_at=NOW - ago,
        ingest_trace=TraceRef("0" * 32, "0" * 16),
    )


def test_build_features_from_profile_memories_and_context() -> None:
    schema = BASE_SCHEMA.with_attributes(
        {"tier": Type.STRING, "age": Type.NUMBER, "vip": Type.BOOL, "bad": Type.NUMBER}
    )
    profile = ProfileFacts(
        interaction_count=4,
        first_seen=NOW - 90 * DAY,
        last_seen=NOW - DAY,
        open_issues=("Lost Luggage",),
        resolved_issues=1,
        objections=("price",),
        preferred_channel=Channel.SMS,
        no_calls=True,
        sentiment_trend="worsening",
        sentiment_recent=-0.5,
        sentiment_previous=0.2,
        last_contact={Channel.EMAIL: NOW - DAY, Channel.VOICE: NOW - 9 * DAY},
        predictions={"churn_risk": 0.8, "unknown_one": 0.1},
    )
    memories = [
        memory(1, 3 * DAY, issue="Lost Luggage", sentiment="negative", score=-0.9, intent="lost"),
        memory(2, 2 * DAY, direction=Direction.OUTBOUND, issue="Bad Flight", sentiment="positive"),
        memory(3, DAY, channel=Channel.SOCIAL, objections=("price", "timing")),
        memory(4, -DAY, issue="Late Flight"),  # after now: left out
    ]
    f = build_features(
        schema,
        DecisionContext(Channel.VOICE, NOW, text="any news?", intent="lost_luggage"),
        profile,
        memories,
        consent_marketing=False,
        attributes={"tier": "gold", "age": " 42 ", "vip": "YES", "bad": "lots", "other": "x"},
    )
    assert f.now == NOW
    assert f["context.channel"] == "voice"
    assert f["context.intent"] == "lost_luggage"
    assert f["context.text"] == "any news?"
    assert f["profile.interaction_count"] == 4.0
    assert f["profile.open_issues"] == ("Lost Luggage",)
    assert f["profile.resolved_issues"] == 1.0
    assert f["profile.objections"] == ("price",)
    assert f["profile.preferred_channel"] == "sms"
    assert f["profile.no_calls"] is True
    assert f["profile.sentiment.trend"] == "worsening"
    assert f["profile.sentiment.recent"] == -0.5
    assert f["profile.last_contact.email"] == NOW - DAY
    assert f["profile.last_contact.voice"] == NOW - 9 * DAY
    assert f["profile.last_contact.chat"] is None
    assert f["prediction.churn_risk"] == 0.8
    assert f["prediction.support_need"] is None
    assert f["consent.marketing"] is False
    assert f["attribute.tier"] == "gold"
    assert f["attribute.age"] == 42.0
    assert f["attribute.vip"] is True
    assert f["attribute.bad"] is None  # does not convert: missing
    interactions = f["memory.interactions"]
    assert isinstance(interactions, tuple)
    assert [(e.label, e.score) for e in interactions] == [
        ("email", 0.25),
        ("email", 0.25),
        ("social", 0.25),
    ]
    # The company's own (outbound) messages are not the customer's issues or sentiment.
    assert f["memory.issues"] == (Event("Lost Luggage", NOW - 3 * DAY, 0.7),)
    assert f["memory.sentiment"] == (Event("negative", NOW - 3 * DAY, -0.9),)
    assert f["memory.intents"] == (Event("lost", NOW - 3 * DAY, 0.8),)
    assert f["memory.objections"] == (
        Event("price", NOW - DAY, 0.6),
        Event("timing", NOW - DAY, 0.6),
    )


def test_an_unknown_customer_on_any_channel() -> None:
    f = build_features(BASE_SCHEMA, DecisionContext(Channel.UNSPECIFIED, NOW), ProfileFacts(), [])
    assert f["context.channel"] is None and f["context.intent"] is None
    assert f["context.text"] == ""
    assert f["profile.interaction_count"] == 0.0
    assert f["profile.open_issues"] == () and f["memory.issues"] == ()
    assert f["profile.sentiment.trend"] == "unknown"
    assert f["profile.sentiment.recent"] is None
    assert f["profile.preferred_channel"] is None and f["profile.first_seen"] is None


def test_profile_facts_from_the_memory_fold() -> None:
    from memcrm.memory.profile import fold_all, render

    memories = [
        memory(1, 5 * DAY, issue="Lost Luggage", sentiment="negative", score=-0.8),
        memory(2, 4 * DAY, sentiment="neutral", objections=("price",)),
        memory(3, 3 * DAY, issue="Lost Luggage", sentiment="negative", score=-0.9),
    ]
    memories[0] = Memory(
        memories[0].memory_id,
        Interaction(
            "i1",
            "c1",
            Channel.EMAIL,
            NOW - 5 * DAY,
            Direction.INBOUND,
            "My bag is lost. Please don't call me, contact me by email.",
        ),
        memories[0].enrichment,
        memories[0].recorded_at,
        memories[0].ingest_trace,
    )
    state = fold_all(memories)
    facts = ProfileFacts.from_profile(render(state, "c1", NOW), state)
    assert facts.interaction_count == 3
    assert facts.open_issues == ("Lost Luggage",)
    assert facts.objections == ("price",)
    assert facts.preferred_channel is Channel.EMAIL
    assert facts.no_calls is True
    assert facts.sentiment_trend in {"worsening", "steady", "improving"}
    assert facts.sentiment_recent is not None and facts.sentiment_previous is not None
    assert facts.last_contact == {Channel.EMAIL: NOW - 3 * DAY}
    f = build_features(BASE_SCHEMA, DecisionContext(Channel.EMAIL, NOW), facts, memories)
    assert parse_rule("'Lost Luggage' in profile.open_issues and profile.no_calls").holds(f)


def test_durations() -> None:
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("2w") == 14 * DAY
    for bad in ("30", "d", "1.5d", "30 d", "0d", "30days", "-1d", "30d 1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(parse_duration(s)) for s in ("14d", "7d", "36h", "90m", "61s")] == [
        "2w",
        "1w",
        "36h",
        "90m",
        "61s",
    ]


def test_the_module_documents_every_feature() -> None:
    doc = policy.__doc__ or ""
    for path in BASE_SCHEMA:
        documented = path
        if path.startswith("profile.last_contact."):
            documented = "profile.last_contact.<channel>"
        assert f"``{documented}``" in doc, path
    for name in policy.FUNCTIONS:
        assert f"``{name}(" in doc, name
