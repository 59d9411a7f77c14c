"""The rule language of action policies: typed features, a small parser and a total evaluator.

Why a language of our own: a tenant writes eligibility, applicability and suitability rules in
its YAML catalog, and a rule must never run arbitrary code, fail at decision time, or read a
feature that does not exist. So a rule is tokenised and parsed here (recursive descent, no
``eval``) into an immutable, type-checked tree at load time, against a declared schema of
features; anything wrong -- a syntax error, an unknown feature, comparing a number with a
string -- is a :class:`RuleError` (a ``ConfigError``) naming where the rule is, the column and
what was expected. Evaluation then cannot fail.

Grammar (EBNF; keywords are lower case; whitespace separates tokens and is otherwise ignored)::

    rule       = or_expr END ;
    or_expr    = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | comparison ;
    comparison = operand [ compare_op operand ] ;          (* no chains: a < b < c *)
    compare_op = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in" ;
    operand    = literal | call | feature | "(" or_expr ")" ;
    call       = NAME "(" [ or_expr { "," or_expr } ] ")" ;
    feature    = NAME { "." NAME } ;
    literal    = [ "-" ] NUMBER | STRING | DURATION | "true" | "false" | list ;
    list       = "[" scalar { "," scalar } "]" ;            (* all strings or all numbers *)
    scalar     = [ "-" ] NUMBER | STRING ;
    NUMBER     = digit { digit } [ "." digit { digit } ] ;
    DURATION   = digit { digit } ( "w" | "d" | "h" | "m" | "s" ) ;   (* 30d, 12h, 2w *)
    STRING     = "'" { char } "'" | '"' { char } '"' ;     (* escapes: \\ \' \" *)
    NAME       = ( letter | "_" ) { letter | digit | "_" } ;

Types: every expression has a static type -- ``bool``, ``number``, ``string``, ``time``,
``duration``, ``list of strings``, ``list of numbers`` or ``events`` (timestamped labels with a
score) -- and a rule must be a ``bool``. ``==``/``!=`` compare two numbers, strings or bools;
``<``, ``<=``, ``>``, ``>=`` two numbers; ``x in y`` is list membership (a string in a list of
strings, a number in a list of numbers) or a substring test (a string in a string).
``and``/``or``/``not`` take bools. Times, durations and events are only read by functions:

    ``count(x [, labels] [, window])``  number of events (or list items) -- 0 when ``x`` is missing
    ``any(x [, labels] [, window])``    ``count(...) > 0``
    ``mean(events [, labels] [, window])``  mean score of the events; missing when there are none
    ``days_since(t)``                   days (fractional) from time ``t`` to now
    ``days_since(events [, labels])``   days since the latest matching event; missing when none
    ``contains(x, s)``                  ``s in x`` for a list of strings or a string ``x``
    ``known(x)``                        whether ``x`` has a value

``labels`` is a string or a list of strings (an event or item matches when its label equals one
of them, case-sensitively); ``window`` is a duration and keeps the events inside the window
ending now. ``x`` is events or a list of strings (a list takes no window). Example:
``count(memory.issues, ['Lost Luggage', 'Damaged Luggage'], 30d) >= 1``.

Windows: the window of length ``W`` ending now is the closed interval ``[now - W, now]``: an
event exactly ``W`` ago is inside, one second earlier is not. Events after now are never counted.

Missing values (a feature nobody knows, e.g. ``prediction.churn_risk`` before it exists) are
handled by these rules, so evaluation is total:

* a comparison with a missing operand is **false** -- every operator, ``!=`` and ``not in``
  included (``not (x == 1)`` is the way to say "unless x is known to be 1");
* a missing bool reads as false in ``and``, ``or``, ``not`` and as a rule's result;
* ``count`` and ``any`` of a missing list are 0 and false; a missing label matches nothing;
  ``mean`` and ``days_since`` of nothing are missing; ``contains`` with a missing argument is
  false; ``known(x)`` tells whether ``x`` has a value.

Features (``BASE_SCHEMA``; the tenant catalog adds ``attribute.<name>`` for each attribute it
declares). "The customer's messages" are memories whose direction is not outbound, as in the
profile; ``memory.*`` are over the *recalled* memories of the decision (the ones the model sees),
``profile.*`` over the customer's whole history (``memcrm.memory.profile``):

* ``context.channel`` string -- the decision's channel (``email``, ``chat``, ``voice``, ``sms``,
  ``social``, ``meeting``, ``ticket``, ``web``, ``purchase``); missing when unspecified
* ``context.intent`` string -- the current message's intent, when known
* ``context.text`` string -- the current message ("" when there is none)
* ``profile.interaction_count`` number, ``profile.first_seen`` / ``profile.last_seen`` time
* ``profile.open_issues`` list of strings -- names of the open issue groups (``Lost Luggage``)
* ``profile.resolved_issues`` number -- issue groups resolved so far
* ``profile.objections`` list of strings -- objection labels ever raised (``price``)
* ``profile.preferred_channel`` string -- the channel the customer asked to be contacted by
* ``profile.no_calls`` bool -- the customer asked not to be called
* ``profile.sentiment.trend`` string (``improving``, ``steady``, ``worsening``, ``unknown``),
  ``profile.sentiment.recent`` / ``profile.sentiment.previous`` number (-1..1)
* ``profile.last_contact.<channel>`` time -- the latest memory on that channel (any direction)
* ``prediction.churn_risk``, ``prediction.purchase_propensity``, ``prediction.support_need``
  number (0..1) -- the profile's predictions, missing until predicted
* ``consent.marketing`` bool -- the customer's latest marketing consent; missing when never given
* ``memory.interactions`` events -- every recalled memory, labelled by channel, score importance
* ``memory.issues`` events -- the customer's messages' issue labels, score the label confidence
* ``memory.intents`` events -- the customer's messages' top intent, score its confidence
* ``memory.objections`` events -- each objection of the customer's messages, score confidence
* ``memory.sentiment`` events -- the customer's messages' sentiment (``positive``, ``neutral``,
  ``negative``), score the sentiment score (-1..1)

:func:`build_features` builds the values from plain inputs (a :class:`DecisionContext`, the
profile as :class:`ProfileFacts`, the recalled memories, consent and attributes) and is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from difflib import get_close_matches
from enum import StrEnum
from typing import Final, NoReturn, Protocol, TypeAlias

from memcrm.core.errors import ConfigError
from memcrm.core.types import Channel, CustomerProfile, Direction, Memory

MAX_RULE_CHARS: Final = 2000
MAX_DEPTH: Final = 32


class Type(StrEnum):
    BOOL = "bool"
    NUMBER = "number"
    STRING = "string"
    TIME = "time"
    DURATION = "duration"
    STRINGS = "list of strings"
    NUMBERS = "list of numbers"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at ``at``: an issue, an intent, a sentiment..."""

    label: str
    at: datetime
    score: float = 0.0


Value: TypeAlias = bool | float | str | datetime | timedelta | tuple[str, ...] | tuple[float, ...]
# Events are a tuple of Event; kept apart so isinstance checks stay simple to read.
FeatureValue: TypeAlias = Value | tuple[Event, ...] | None
Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None


# ---------------------------------------------------------------------------------------------
# Channels by name


def channel_name(channel: Channel) -> str:
    """``email``, ``voice``...: how rules and YAML name a channel."""
    return channel.name.lower()


CHANNEL_NAMES: Final = {channel_name(c): c for c in Channel if c is not Channel.UNSPECIFIED}


# ---------------------------------------------------------------------------------------------
# The feature schema


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    type: Type
    doc: str


PREDICTIONS: Final = ("churn_risk", "purchase_propensity", "support_need")
ATTRIBUTE_PREFIX: Final = "attribute."
ATTRIBUTE_TYPES: Final = {"string": Type.STRING, "number": Type.NUMBER, "bool": Type.BOOL}


def _base_schema() -> dict[str, FeatureSpec]:
    s = {
        "context.channel": FeatureSpec(Type.STRING, "the decision's channel; missing: any"),
        "context.intent": FeatureSpec(Type.STRING, "the current message's intent, when known"),
        "context.text": FeatureSpec(Type.STRING, "the current message"),
        "profile.interaction_count": FeatureSpec(Type.NUMBER, "memories of the customer"),
        "profile.first_seen": FeatureSpec(Type.TIME, "the earliest memory"),
        "profile.last_seen": FeatureSpec(Type.TIME, "the latest memory"),
        "profile.open_issues": FeatureSpec(Type.STRINGS, "names of the open issue groups"),
        "profile.resolved_issues": FeatureSpec(Type.NUMBER, "issue groups resolved so far"),
        "profile.objections": FeatureSpec(Type.STRINGS, "objection labels ever raised"),
        "profile.preferred_channel": FeatureSpec(Type.STRING, "the channel asked for"),
        "profile.no_calls": FeatureSpec(Type.BOOL, "the customer asked not to be called"),
        "profile.sentiment.trend": FeatureSpec(Type.STRING, "improving|steady|worsening|unknown"),
        "profile.sentiment.recent": FeatureSpec(Type.NUMBER, "mean of the recent points"),
        "profile.sentiment.previous": FeatureSpec(Type.NUMBER, "mean of the points before"),
        "consent.marketing": FeatureSpec(Type.BOOL, "the latest marketing consent"),
        "memory.interactions": FeatureSpec(Type.EVENTS, "recalled memories by channel"),
        "memory.issues": FeatureSpec(Type.EVENTS, "issue labels of the customer's messages"),
        "memory.intents": FeatureSpec(Type.EVENTS, "top intents of the customer's messages"),
        "memory.objections": FeatureSpec(Type.EVENTS, "objections of the customer's messages"),
        "memory.sentiment": FeatureSpec(Type.EVENTS, "sentiment of the customer's messages"),
    }
    for name in CHANNEL_NAMES:
        s[f"profile.last_contact.{name}"] = FeatureSpec(Type.TIME, f"the latest {name} memory")
    for name in PREDICTIONS:
        s[f"prediction.{name}"] = FeatureSpec(Type.NUMBER, f"the {name} prediction (0..1)")
    return s


class FeatureSchema(Mapping[str, FeatureSpec]):
    """Feature path -> type: what rules may read. Immutable."""

    __slots__ = ("_specs",)

    def __init__(self, specs: Mapping[str, FeatureSpec]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, path: str) -> FeatureSpec:
        return self._specs[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSchema) and self._specs == other._specs

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._specs)))

    def with_attributes(self, attributes: Mapping[str, Type]) -> FeatureSchema:
        """This schema plus ``attribute.<name>`` for each declared customer attribute."""
        specs = dict(self._specs)
        for name, kind in attributes.items():
            if kind not in (Type.STRING, Type.NUMBER, Type.BOOL):
                raise ValueError(f"attribute {name}: {kind} is not string, number or bool")
            specs[ATTRIBUTE_PREFIX + name] = FeatureSpec(kind, f"customer attribute {name!r}")
        return FeatureSchema(specs)

    @property
    def attributes(self) -> dict[str, Type]:
        """Declared attribute name (the interaction attribute key) -> type."""
        return {
            path.removeprefix(ATTRIBUTE_PREFIX): spec.type
            for path, spec in self._specs.items()
            if path.startswith(ATTRIBUTE_PREFIX)
        }


BASE_SCHEMA: Final = FeatureSchema(_base_schema())


# ---------------------------------------------------------------------------------------------
# Feature values


def _conforms(value: FeatureValue, kind: Type) -> bool:
    if value is None:
        return True
    match kind:
        case Type.BOOL:
            return isinstance(value, bool)
        case Type.NUMBER:
            return isinstance(value, float) and math.isfinite(value)
        case Type.STRING:
            return isinstance(value, str)
        case Type.TIME:
            return isinstance(value, datetime) and value.tzinfo is not None
        case Type.DURATION:
            return isinstance(value, timedelta)
        case Type.STRINGS:
            return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        case Type.NUMBERS:
            return isinstance(value, tuple) and all(
                isinstance(v, float) and math.isfinite(v) for v in value
            )
        case Type.EVENTS:
            return isinstance(value, tuple) and all(
                isinstance(v, Event) and v.at.tzinfo is not None for v in value
            )
    return False  # pragma: no cover - every Type is matched above


class Features(Mapping[str, FeatureValue]):
    """The values of every feature of a schema at ``now`` (missing ones are None). Immutable.

    The constructor checks each value against the schema (a bug in a builder fails here, not
    in a rule). Numbers are floats; times are timezone-aware.
    """

    __slots__ = ("_values", "now", "schema")

    def __init__(
        self, schema: FeatureSchema, values: Mapping[str, FeatureValue], now: datetime
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        unknown = sorted(set(values) - set(schema))
        if unknown:
            raise ValueError(f"features not in the schema: {unknown}")
        for path, value in values.items():
            if not _conforms(value, schema[path].type):
                raise ValueError(f"feature {path} must be {schema[path].type}, not {value!r}")
        self.schema = schema
        self.now = now.astimezone(UTC)
        self._values = {path: values.get(path) for path in schema}

    def __getitem__(self, path: str) -> FeatureValue:
        return self._values[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_json(self, path: str) -> Json:
        """The value of ``path`` as JSON (times ISO 8601, events as objects)."""
        return json_value(self._values.get(path))


def json_value(value: FeatureValue) -> Json:
    if value is None or isinstance(value, bool | float | str):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    out: list[Json] = []
    for item in value:
        if isinstance(item, Event):
            out.append(
                {
                    "label": item.label,
                    "at": item.at.astimezone(UTC).isoformat(),
                    "score": item.score,
                }
            )
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Building features


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What is happening now: the channel asked for, the current message and its intent."""

    channel: Channel
    now: datetime
    text: str = ""
    intent: str = ""


class _NamedGroup(Protocol):
    @property
    def name(self) -> str: ...


class _Preference(Protocol):
    @property
    def channel(self) -> int: ...


class ProfileStateLike(Protocol):
    """What :meth:`ProfileFacts.from_profile` reads of ``memcrm.memory.profile.ProfileState``."""

    @property
    def open_issues(self) -> Sequence[_NamedGroup]: ...

    @property
    def resolved_issues(self) -> int: ...

    @property
    def objections(self) -> Mapping[str, object]: ...

    @property
    def statements(self) -> Mapping[str, _Preference]: ...


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    """The profile as plain facts; the default is a customer we know nothing about."""

    interaction_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    open_issues: tuple[str, ...] = ()
    resolved_issues: int = 0
    objections: tuple[str, ...] = ()
    preferred_channel: Channel | None = None
    no_calls: bool = False
    sentiment_trend: str = "unknown"
    sentiment_recent: float | None = None
    sentiment_previous: float | None = None
    last_contact: Mapping[Channel, datetime] = field(default_factory=dict)
    predictions: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: CustomerProfile, state: ProfileStateLike) -> ProfileFacts:
        """The facts of a rendered profile and the state it was rendered from.

        The state gives what the profile only has as prose (issue names, objection labels,
        the stated channel); the profile gives the sentiment trend and predictions.
        """
        trend = profile.sentiment_trend
        points = len(trend.points)
        preferred = state.statements.get("channel")
        return cls(
            interaction_count=profile.interaction_count,
            first_seen=profile.first_seen,
            last_seen=profile.last_seen,
            open_issues=tuple(g.name for g in state.open_issues),
            resolved_issues=state.resolved_issues,
            objections=tuple(sorted(state.objections)),
            preferred_channel=Channel(preferred.channel) if preferred is not None else None,
            no_calls="no_calls" in state.statements,
            sentiment_trend=trend.direction,
            sentiment_recent=trend.recent if points >= 1 else None,
            sentiment_previous=trend.previous if points >= 2 else None,
            last_contact={c.channel: c.at for c in profile.last_contact},
            predictions={p.name: p.score for p in profile.predictions},
        )


def _number(value: float | int | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def parse_bool(text: str) -> bool | None:
    """``true``/``yes``/``1`` and ``false``/``no``/``0`` (any case, trimmed); else None."""
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _attribute(raw: str | None, kind: Type) -> FeatureValue:
    if raw is None:
        return None
    if kind is Type.BOOL:
        return parse_bool(raw)
    if kind is Type.NUMBER:
        try:
            return _number(float(raw.strip()))
        except ValueError:
            return None
    return raw


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{at!r} must be timezone-aware")
    return at.astimezone(UTC)


def build_features(
    schema: FeatureSchema,
    context: DecisionContext,
    profile: ProfileFacts,
    memories: Iterable[Memory],
    *,
    consent_marketing: bool | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Features:
    """Every feature of ``schema`` at ``context.now``; pure.

    ``memories`` are the decision's recalled memories (memories that occurred after now are
    left out); ``attributes`` are the customer's latest interaction attribute values by key
    (``memcrm.decisions.contact.latest_attributes``), read for the schema's declared
    attributes and converted to their types (a value that does not convert is missing).
    """
    now = _utc(context.now)
    values: dict[str, FeatureValue] = {
        "context.channel": _channel_or_none(context.channel),
        "context.intent": context.intent or None,
        "context.text": context.text,
        "profile.interaction_count": float(profile.interaction_count),
        "profile.first_seen": _utc(profile.first_seen) if profile.first_seen else None,
        "profile.last_seen": _utc(profile.last_seen) if profile.last_seen else None,
        "profile.open_issues": tuple(profile.open_issues),
        "profile.resolved_issues": float(profile.resolved_issues),
        "profile.objections": tuple(profile.objections),
        "profile.preferred_channel": _channel_or_none(profile.preferred_channel),
        "profile.no_calls": profile.no_calls,
        "profile.sentiment.trend": profile.sentiment_trend,
        "profile.sentiment.recent": _number(profile.sentiment_recent),
        "profile.sentiment.previous": _number(profile.sentiment_previous),
        "consent.marketing": consent_marketing,
    }
    for channel, at in profile.last_contact.items():
        if channel is not Channel.UNSPECIFIED:
            values[f"profile.last_contact.{channel_name(channel)}"] = _utc(at)
    for name in PREDICTIONS:
        values[f"prediction.{name}"] = _number(profile.predictions.get(name))
    values.update(_memory_events(memories, now))
    for name, kind in schema.attributes.items():
        values[ATTRIBUTE_PREFIX + name] = _attribute((attributes or {}).get(name), kind)
    return Features(schema, {k: v for k, v in values.items() if k in schema}, now)


def _channel_or_none(channel: Channel | None) -> str | None:
    if channel is None or channel is Channel.UNSPECIFIED:
        return None
    return channel_name(channel)


def _memory_events(memories: Iterable[Memory], now: datetime) -> dict[str, tuple[Event, ...]]:
    lists: dict[str, list[Event]] = {
        "memory.interactions": [],
        "memory.issues": [],
        "memory.intents": [],
        "memory.objections": [],
        "memory.sentiment": [],
    }
    for memory in memories:
        at = _utc(memory.interaction.occurred_at)
        if at > now:
            continue
        e = memory.enrichment
        lists["memory.interactions"].append(
            Event(channel_name(memory.interaction.channel), at, e.importance)
        )
        if memory.interaction.direction is Direction.OUTBOUND:
            continue
        if e.issue is not None:
            lists["memory.issues"].append(Event(e.issue.name, at, e.issue.confidence))
        if e.intents:
            lists["memory.intents"].append(Event(e.intents[0].name, at, e.intents[0].confidence))
        for objection in e.objections:
            lists["memory.objections"].append(Event(objection.name, at, objection.confidence))
        if e.sentiment is not None:
            lists["memory.sentiment"].append(Event(e.sentiment.name, at, e.sentiment_score))
    return {
        path: tuple(sorted(events, key=lambda ev: (ev.at, ev.label)))
        for path, events in lists.items()
    }


# ---------------------------------------------------------------------------------------------
# Errors


class RuleError(ConfigError):
    """A rule that does not parse or type-check; ``position`` is a 0-based character offset."""

    def __init__(self, where: str, rule: str, position: int, problem: str) -> None:
        super().__init__(f"{where}: at column {position + 1} of {rule!r}: {problem}")
        self.where = where
        self.rule = rule
        self.position = position
        self.problem = problem

    def __reduce__(self) -> tuple[type[RuleError], tuple[str, str, int, str]]:
        return (type(self), (self.where, self.rule, self.position, self.problem))


# ---------------------------------------------------------------------------------------------
# Tokens


class Tok(StrEnum):
    NUMBER = "number"
    DURATION = "duration"
    STRING = "string"
    NAME = "name"
    OP = "operator"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    text: str
    pos: int
    value: float | str | timedelta | None = None


KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
DURATION_UNITS: Final = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", "-")
_HINTS = {
    "=": "use '==' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "!": "use 'not' or '!='",
}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_name_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _is_name_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


class _Fail(Exception):
    def __init__(self, pos: int, problem: str) -> None:
        super().__init__(problem)
        self.pos = pos
        self.problem = problem


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` ending with an END token; ``_Fail`` on a bad character."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif _is_digit(ch):
            tokens.append(_number_token(text, i))
            i += len(tokens[-1].text)
        elif _is_name_start(ch):
            j = i + 1
            while j < n and (
                _is_name_char(text[j])
                or (text[j] == "." and j + 1 < n and _is_name_start(text[j + 1]))
            ):
                j += 2 if text[j] == "." else 1
            tokens.append(Token(Tok.NAME, text[i:j], i))
            i = j
        elif ch in "'\"":
            tokens.append(_string_token(text, i))
            i += len(tokens[-1].text)
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                hint = _HINTS.get(ch)
                raise _Fail(i, f"unexpected {ch!r}" + (f"; {hint}" if hint else ""))
            tokens.append(Token(Tok.OP, op, i))
            i += len(op)
    tokens.append(Token(Tok.END, "", n))
    return tokens


def _number_token(text: str, start: int) -> Token:
    i, n = start, len(text)
    while i < n and _is_digit(text[i]):
        i += 1
    if i + 1 < n and text[i] == "." and _is_digit(text[i + 1]):
        i += 1
        while i < n and _is_digit(text[i]):
            i += 1
    j = i
    while j < n and _is_name_char(text[j]):
        j += 1
    word, suffix = text[start:j], text[i:j]
    if not suffix:
        return Token(Tok.NUMBER, word, start, float(word))
    if suffix in DURATION_UNITS and "." not in text[start:i]:
        return Token(Tok.DURATION, word, start, int(text[start:i]) * DURATION_UNITS[suffix])
    raise _Fail(
        start,
        f"{word!r} is neither a number nor a duration (a whole number and one of "
        "w, d, h, m, s: 30d)",
    )


def _string_token(text: str, start: int) -> Token:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return Token(Tok.STRING, text[start : i + 1], start, "".join(out))
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise _Fail(i, "unknown escape in a string (use \\\\, \\' or \\\")")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise _Fail(start, "unterminated string")


def _describe(token: Token) -> str:
    if token.kind is Tok.END:
        return "the end of the rule"
    if token.kind is Tok.NAME and token.text in KEYWORDS:
        return f"keyword {token.text!r}"
    return f"{token.kind} {token.text!r}"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``15m``, ``10s`` (a positive whole number and a unit)."""
    try:
        tokens = tokenize(text.strip())
    except _Fail:
        tokens = []
    if len(tokens) != 2 or tokens[0].kind is not Tok.DURATION:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 2w, 15m or 10s")
    value = tokens[0].value
    assert isinstance(value, timedelta)
    if value <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact ``30d``-style spelling of ``value`` (whole seconds)."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = int(DURATION_UNITS[unit].total_seconds())
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---------------------------------------------------------------------------------------------
# The tree


@dataclass(frozen=True, slots=True)
class Const:
    pos: int
    type: Type
    value: Value


@dataclass(frozen=True, slots=True)
class FeatureRef:
    pos: int
    type: Type
    path: str


@dataclass(frozen=True, slots=True)
class Call:
    pos: int
    type: Type
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    pos: int
    op: str  # == != < <= > >= in "not in"
    left: Node
    right: Node
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class Not:
    pos: int
    operand: Node
    type: Type = Type.BOOL


@dataclass(frozen=True, slots=True)
class Logic:
    pos: int
    op: str  # and | or
    operands: tuple[Node, ...]
    type: Type = Type.BOOL


Node: TypeAlias = Const | FeatureRef | Call | Compare | Not | Logic

FUNCTIONS: Final = {
    "count": "count(events or list [, labels] [, window]) -> number",
    "any": "any(events or list [, labels] [, window]) -> bool",
    "mean": "mean(events [, labels] [, window]) -> number",
    "days_since": "days_since(time) or days_since(events [, labels]) -> number",
    "contains": "contains(list of strings or string, string) -> bool",
    "known": "known(anything) -> bool",
}
_LABELS = (Type.STRING, Type.STRINGS)
_EQUALITY = (Type.NUMBER, Type.STRING, Type.BOOL)
_MEMBERSHIP = {
    (Type.STRING, Type.STRINGS),
    (Type.STRING, Type.STRING),
    (Type.NUMBER, Type.NUMBERS),
}


class _Parser:
    def __init__(self, text: str, schema: FeatureSchema) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.schema = schema
        self.paths: list[str] = []

    # -- token helpers

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def at_op(self, *ops: str) -> bool:
        t = self.peek()
        return t.kind is Tok.OP and t.text in ops

    def at_keyword(self, word: str, ahead: int = 0) -> bool:
        t = self.peek(ahead)
        return t.kind is Tok.NAME and t.text == word

    def expected(self, what: str) -> NoReturn:
        token = self.peek()
        raise _Fail(token.pos, f"expected {what}, found {_describe(token)}")

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail(pos, f"nested deeper than {MAX_DEPTH} levels")

    # -- grammar

    def rule(self) -> Node:
        node = self.or_expr()
        if self.peek().kind is not Tok.END:
            self.expected("'and', 'or' or the end of the rule")
        if node.type is not Type.BOOL:
            raise _Fail(node.pos, f"a rule must be a condition (a bool), not {_a(node.type)}")
        return node

    def or_expr(self) -> Node:
        return self._logic("or", self.and_expr)

    def and_expr(self) -> Node:
        return self._logic("and", self.not_expr)

    def _logic(self, op: str, operand: Callable[[], Node]) -> Node:
        first = operand()
        operands = [first]
        while self.at_keyword(op):
            self.take()
            operands.append(operand())
        if len(operands) == 1:
            return first
        for node in operands:
            _need_bool(node, f"'{op}'")
        return Logic(first.pos, op, tuple(operands))

    def not_expr(self) -> Node:
        if self.at_keyword("not"):
            pos = self.take().pos
            self.nest(pos)
            operand = self.not_expr()
            self.depth -= 1
            _need_bool(operand, "'not'")
            return Not(pos, operand)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        t = self.peek()
        if self.at_op("==", "!=", "<", "<=", ">", ">=") or self.at_keyword("in"):
            op = self.take().text
        elif self.at_keyword("not") and self.at_keyword("in", 1):
            self.take()
            self.take()
            op = "not in"
        else:
            return left
        right = self.operand()
        _check_compare(op, left, right, t.pos)
        if self.at_op("==", "!=", "<", "<=", ">", ">=") or self.at_keyword("in"):
            raise _Fail(self.peek().pos, "comparisons do not chain; join them with 'and'")
        return Compare(t.pos, op, left, right)

    def operand(self) -> Node:
        t = self.peek()
        if self.at_op("("):
            self.take()
            self.nest(t.pos)
            node = self.or_expr()
            self.depth -= 1
            if not self.at_op(")"):
                self.expected("')'")
            self.take()
            return node
        if self.at_op("["):
            return self.list_literal()
        if t.kind in (Tok.NUMBER, Tok.STRING, Tok.DURATION) or self.at_op("-"):
            return self.scalar(allow_duration=True)
        if t.kind is Tok.NAME and t.text in ("true", "false"):
            self.take()
            return Const(t.pos, Type.BOOL, t.text == "true")
        if t.kind is Tok.NAME and t.text not in KEYWORDS:
            if self.peek(1).kind is Tok.OP and self.peek(1).text == "(":
                return self.call()
            return self.feature()
        return self.expected("a value, a feature, a function or '('")

    def scalar(self, *, allow_duration: bool) -> Const:
        t = self.peek()
        if self.at_op("-"):
            self.take()
            number = self.peek()
            if number.kind is not Tok.NUMBER:
                self.expected("a number after '-'")
            self.take()
            assert isinstance(number.value, float)
            return Const(t.pos, Type.NUMBER, -number.value)
        if t.kind is Tok.NUMBER:
            self.take()
            assert isinstance(t.value, float)
            return Const(t.pos, Type.NUMBER, t.value)
        if t.kind is Tok.STRING:
            self.take()
            assert isinstance(t.value, str)
            return Const(t.pos, Type.STRING, t.value)
        if t.kind is Tok.DURATION and allow_duration:
            self.take()
            assert isinstance(t.value, timedelta)
            if t.value <= timedelta(0):
                raise _Fail(t.pos, "a duration must be longer than zero")
            return Const(t.pos, Type.DURATION, t.value)
        return self.expected("a number or a string")

    def list_literal(self) -> Const:
        start = self.take().pos
        if self.at_op("]"):
            raise _Fail(start, "an empty list matches nothing; remove the condition")
        items = [self.scalar(allow_duration=False)]
        while self.at_op(","):
            self.take()
            items.append(self.scalar(allow_duration=False))
        if not self.at_op("]"):
            self.expected("',' or ']'")
        self.take()
        kinds = {item.type for item in items}
        if len(kinds) > 1:
            raise _Fail(start, "a list holds only strings or only numbers")
        if items[0].type is Type.STRING:
            return Const(start, Type.STRINGS, tuple(str(item.value) for item in items))
        return Const(
            start, Type.NUMBERS, tuple(i.value for i in items if isinstance(i.value, float))
        )

    def feature(self) -> FeatureRef:
        t = self.take()
        spec = self.schema.get(t.text)
        if spec is None:
            raise _Fail(t.pos, f"unknown feature {t.text!r}{_suggest(t.text, self.schema)}")
        if t.text not in self.paths:
            self.paths.append(t.text)
        return FeatureRef(t.pos, spec.type, t.text)

    def call(self) -> Call:
        t = self.take()
        if t.text not in FUNCTIONS:
            known = ", ".join(FUNCTIONS)
            raise _Fail(t.pos, f"unknown function {t.text!r} (functions: {known})")
        self.nest(t.pos)
        self.take()  # (
        args: list[Node] = []
        if not self.at_op(")"):
            args.append(self.or_expr())
            while self.at_op(","):
                self.take()
                args.append(self.or_expr())
        if not self.at_op(")"):
            self.expected("',' or ')'")
        self.take()
        self.depth -= 1
        return Call(t.pos, _check_call(t.text, args, t.pos), t.text, tuple(args))


def _suggest(path: str, schema: FeatureSchema) -> str:
    close = get_close_matches(path, list(schema), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]!r}?"
    prefixes = sorted({p.split(".")[0] + "." for p in schema})
    return f" (features start with {', '.join(prefixes)})"


def _need_bool(node: Node, where: str) -> None:
    if node.type is not Type.BOOL:
        raise _Fail(node.pos, f"{where} needs a condition (a bool), not {_a(node.type)}")


def _check_compare(op: str, left: Node, right: Node, pos: int) -> None:
    pair = (left.type, right.type)
    if op in ("in", "not in"):
        if pair not in _MEMBERSHIP:
            raise _Fail(
                pos,
                f"'{op}' tests a string in a list of strings or in a string, or a number in a "
                f"list of numbers, not {_a(left.type)} in {_a(right.type)}",
            )
        return
    if op in ("==", "!="):
        if left.type != right.type or left.type not in _EQUALITY:
            raise _Fail(
                pos,
                f"'{op}' compares two numbers, strings or bools, not {_a(left.type)} with "
                f"{_a(right.type)}" + _read_with(left, right),
            )
        return
    if pair != (Type.NUMBER, Type.NUMBER):
        raise _Fail(
            pos,
            f"'{op}' compares two numbers, not {_a(left.type)} with {_a(right.type)}"
            + _read_with(left, right),
        )


def _a(kind: Type) -> str:
    return "events" if kind is Type.EVENTS else f"a {kind}"


def _read_with(left: Node, right: Node) -> str:
    if {left.type, right.type} & {Type.EVENTS, Type.TIME}:
        return "; read events and times with count, any, mean or days_since"
    return ""


def _check_call(name: str, args: Sequence[Node], pos: int) -> Type:
    types = [a.type for a in args]

    def bad(problem: str) -> NoReturn:
        raise _Fail(pos, f"{name}: {problem}; usage: {FUNCTIONS[name]}")

    if name == "known":
        if len(args) != 1:
            bad(f"takes 1 argument, not {len(args)}")
        return Type.BOOL
    if name == "contains":
        if (
            len(args) != 2
            or types[0] not in (Type.STRINGS, Type.STRING)
            or types[1] is not (Type.STRING)
        ):
            bad("wrong arguments " + _listed(types))
        return Type.BOOL
    if not args:
        bad("takes at least 1 argument")
    subject, extras = types[0], types[1:]
    if name == "days_since":
        if subject is Type.TIME and not extras:
            return Type.NUMBER
        if subject is Type.EVENTS and (not extras or (len(extras) == 1 and extras[0] in _LABELS)):
            return Type.NUMBER
        bad("wrong arguments " + _listed(types))
    allowed = (Type.EVENTS,) if name == "mean" else (Type.EVENTS, Type.STRINGS)
    if subject not in allowed:
        bad(f"the first argument must be {' or '.join(allowed)}, not {subject}")
    rest = list(extras)
    if rest and rest[0] in _LABELS:
        rest.pop(0)
    if rest and rest[0] is Type.DURATION:
        if subject is not Type.EVENTS:
            bad("a window needs events, not a list")
        rest.pop(0)
    if rest:
        bad(f"after the first argument come labels then a window, not {_listed(extras)}")
    return Type.NUMBER if name in ("count", "mean") else Type.BOOL


def _listed(types: Sequence[Type]) -> str:
    return "(" + ", ".join(types) + ")"


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed, type-checked condition over features; evaluating it never raises."""

    text: str
    tree: Node = field(repr=False, compare=False)
    features: tuple[str, ...]  # the feature paths it reads, in order of appearance

    def holds(self, features: Features) -> bool:
        return _evaluate(self.tree, features) is True

    def reads(self, features: Features) -> dict[str, Json]:
        """The values of the features the rule reads, for the decision record."""
        return {path: features.to_json(path) for path in self.features}


def parse_rule(text: str, schema: FeatureSchema = BASE_SCHEMA, *, where: str = "rule") -> Rule:
    """Parse and type-check ``text``; RuleError names ``where``, the column and the problem."""
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(where, text[:40] + "…", 0, f"longer than {MAX_RULE_CHARS} characters")
    if not text.strip():
        raise RuleError(where, text, 0, "a rule must not be empty")
    try:
        parser = _Parser(text, schema)
        tree = parser.rule()
    except _Fail as exc:
        raise RuleError(where, text, exc.pos, exc.problem) from None
    return Rule(text=text, tree=tree, features=tuple(parser.paths))


# ---------------------------------------------------------------------------------------------
# Evaluation


_NO_LABELS: Final = object()


def _evaluate(node: Node, f: Features) -> FeatureValue:
    match node:
        case Const(value=value):
            return value
        case FeatureRef(path=path):
            return f.get(path)
        case Not(operand=operand):
            return _evaluate(operand, f) is not True
        case Logic(op="and", operands=operands):
            return all(_evaluate(o, f) is True for o in operands)
        case Logic(operands=operands):
            return any(_evaluate(o, f) is True for o in operands)
        case Compare(op=op, left=left, right=right):
            return _compare(op, _evaluate(left, f), _evaluate(right, f))
        case Call(name=name, args=args):
            return _call(name, [_evaluate(a, f) for a in args], [a.type for a in args], f.now)
    return None  # pragma: no cover - every node is matched above


def _compare(op: str, left: FeatureValue, right: FeatureValue) -> bool:
    if left is None or right is None:
        return False
    if op in ("in", "not in"):
        assert isinstance(right, str | tuple)
        found = left in right
        return found if op == "in" else not found
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    assert isinstance(left, float) and isinstance(right, float)
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _call(name: str, values: list[FeatureValue], types: list[Type], now: datetime) -> FeatureValue:
    if name == "known":
        return values[0] is not None
    if name == "contains":
        haystack, needle = values
        if haystack is None or needle is None:
            return False
        assert isinstance(haystack, str | tuple)
        return needle in haystack
    subject = values[0]
    labels: object = _NO_LABELS
    window: timedelta | None = None
    for value, kind in zip(values[1:], types[1:], strict=True):
        if kind is Type.DURATION:
            assert isinstance(value, timedelta)
            window = value
        else:
            labels = value
    if name == "days_since" and types[0] is Type.TIME:
        if subject is None:
            return None
        assert isinstance(subject, datetime)
        return (now - subject).total_seconds() / 86400.0
    items = _select(subject, labels, window, now)
    if name == "count":
        return float(len(items))
    if name == "any":
        return bool(items)
    if not items:
        return None
    if name == "mean":
        return math.fsum(_score(i) for i in items) / len(items)
    latest = max(i.at for i in items if isinstance(i, Event))
    return (now - latest).total_seconds() / 86400.0


def _score(item: Event | str) -> float:
    return item.score if isinstance(item, Event) else 0.0


def _select(
    subject: FeatureValue, labels: object, window: timedelta | None, now: datetime
) -> list[Event | str]:
    if subject is None or labels is None:
        return []
    assert isinstance(subject, tuple)
    wanted: frozenset[str] | None = None
    if isinstance(labels, str):
        wanted = frozenset({labels})
    elif isinstance(labels, tuple):
        wanted = frozenset(str(x) for x in labels)
    out: list[Event | str] = []
    for item in subject:
        if isinstance(item, Event):
            if item.at > now or (window is not None and item.at < now - window):
                continue
            label = item.label
        else:
            label = str(item)
        if wanted is None or label in wanted:
            out.append(item if isinstance(item, Event) else label)
    return out
