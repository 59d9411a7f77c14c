"""The customer profile: what is known about a customer, every claim citing its memories.

The profile is a pure, deterministic left fold over the customer's visible memories in
(``occurred_at``, ``memory_id``) order: ``fold(state, memory) -> state`` builds a small,
JSON-serialisable ``ProfileState`` and ``render(state, customer_id, as_of)`` turns it into the
API's ``CustomerProfile``. Because it is a left fold, folding one more memory that comes after
everything folded so far gives exactly what a rebuild from PostgreSQL gives; ``Profiles`` keeps
the state of "now" in Redis that way at ingestion and rebuilds it from PostgreSQL whenever it
cannot (cache miss, malformed entry, a correction or a memory older than the last one folded).

Rules (all times in UTC; "the customer's messages" are memories whose direction is inbound or
unspecified, never outbound):

* **Contact**: ``interaction_count`` counts the visible memories; ``first_seen``/``last_seen``
  are the earliest and latest ``occurred_at``; ``last_contact`` holds the latest memory per
  channel (any direction), most recent first.
* **Open issues**: a customer message is a *complaint* when its enrichment has an ``issue``
  label (``Can't Tell`` counts only when the message raises no objection, and is then named
  "Unspecified complaint"), or when its sentiment is negative and its top intent
  (confidence >= ``COMPLAINT_INTENT_MIN``) is complaint-like: the intent name contains one of
  ``COMPLAINT_INTENT_WORDS`` (e.g. ``card_not_working``, ``request_refund``). Complaints are
  grouped: a complaint joins the open group that shares its ``thread_id``, else the open group
  with the same issue name, else opens a new group. A later memory *resolves* the groups it
  relates to when it is marked resolved (attribute ``status``, ``resolution`` or
  ``ticket_status`` equal to resolved, closed, fixed or solved) or is a customer message with
  positive sentiment. It relates to a group when it is in one of the group's threads or is
  about the same issue (its ``issue`` label or ``issue`` attribute names it); a memory marked
  resolved that has neither a thread nor an issue resolves every open group without a thread.
  A thread-less positive message resolves nothing: "the crew were lovely" does not find a bag.
  Each open group is one item, "Lost Luggage, open since 3 May 2026 (2 messages): “…”" quoting
  the latest complaint, citing the first complaint and the latest ones (``MAX_CITED`` in all).
  A later complaint about a resolved issue opens a new group.
* **Objections**: per objection label raised in the customer's messages, one item
  "Price objection raised 3 times, last on 5 May 2026: “…”" citing the latest ``MAX_CITED``.
* **Preferences**: stated preferences found in the customer's messages by the patterns below,
  the latest per kind, each citing the message that stated it:
  ``channel`` ("contact me by email", "reach me on my phone", "only email me", "text me only",
  "I prefer email", "I'd rather be contacted by chat"), ``no_calls`` ("please don't call",
  "stop calling me", "no phone calls", "I'd rather not be called") — a later ``channel``
  preference for the phone drops ``no_calls`` and a later ``no_calls`` drops a phone
  preference — and ``stated`` (any other "I prefer …", "I'd prefer …", "I'd rather …",
  "I would rather …"; the latest ``STATED_KEPT`` distinct statements). Then the channel the
  customer writes on most: once there are ``CHANNEL_USE_MIN`` customer messages on
  conversation channels (not purchases), a channel carrying more than half of them.
* **Sentiment trend**: the points are the customer's messages that have a sentiment (the last
  ``POINTS_KEPT``). With ``n`` points, ``w = min(TREND_WINDOW, n // 2)``: ``recent`` is the
  mean score of the last ``w`` points and ``previous`` of the ``w`` before them; the direction
  is ``improving`` or ``worsening`` when they differ by more than ``TREND_THRESHOLD``,
  ``steady`` otherwise, and ``unknown`` with fewer than 2 points.
* **Summary**: one sentence per part above that has something to say, each restating items of
  the profile (contact, sentiment, open issues, objections, preferences); dates, never
  relative times, so the same state reads the same whenever it is asked.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pydantic

from memcrm.core.errors import NotFound
from memcrm.core.text import snippet
from memcrm.core.types import (
    Channel,
    ChannelContact,
    CustomerProfile,
    Direction,
    Memory,
    ProfileItem,
    SentimentPoint,
    SentimentTrend,
)
from memcrm.core.validation import check_id
from memcrm.memory.hot import HotState
from memcrm.memory.store import MemoryStore

log = logging.getLogger(__name__)

# Bumped whenever the state or the rules change, so cached states of old rules are rebuilt.
SCHEMA = 1
MAX_CITED = 20
POINTS_KEPT = 20
TREND_WINDOW = 5
TREND_THRESHOLD = 0.25
CHANNEL_USE_MIN = 3
STATED_KEPT = 3
COMPLAINT_INTENT_MIN = 0.5
# Words of an intent name that make a negative message about it a complaint.
# fmt: off
COMPLAINT_INTENT_WORDS = frozenset({
    "not", "lost", "stolen", "declined", "failed", "wrong", "twice", "reverted", "swallowed",
    "blocked", "compromised", "complaint", "refund", "charged", "charge", "pending", "cancelled",
    "delayed", "late", "broken", "damaged", "missing",
})
# fmt: on
RESOLVED_KEYS = ("status", "resolution", "ticket_status")
RESOLVED_VALUES = frozenset({"resolved", "closed", "fixed", "solved"})
SNIPPET_CHARS = 100
UNSPECIFIED_ISSUE = "Can't Tell"
_ISSUE_NAMES = {UNSPECIFIED_ISSUE: "Unspecified complaint", "longlines": "Long lines"}
# Channels a customer converses on (a purchase is not a way of writing to us).
_CONVERSATION = frozenset(set(Channel) - {Channel.UNSPECIFIED, Channel.PURCHASE})
_CHANNEL_NAMES = {
    Channel.UNSPECIFIED: "an unspecified channel",
    Channel.EMAIL: "email",
    Channel.CHAT: "chat",
    Channel.VOICE: "phone",
    Channel.SMS: "SMS",
    Channel.SOCIAL: "social media",
    Channel.MEETING: "meetings",
    Channel.TICKET: "tickets",
    Channel.WEB: "the web",
    Channel.PURCHASE: "purchases",
}
# fmt: off
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
# fmt: on
K = TypeVar("K", int, str)

# Every memory visible now, whatever the clocks of this host and PostgreSQL say.
_LATEST = datetime.max.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class Cited:
    at: datetime
    memory_id: str


@dataclass
class IssueGroup:
    """Complaints about one issue that no later memory resolved."""

    name: str
    threads: list[str]
    since: datetime
    last_at: datetime
    count: int
    memory_ids: list[str]  # the first complaint, then the latest ones; MAX_CITED at most
    latest: str  # snippet of the latest complaint


@dataclass
class Tally:
    """How often something happened, when last, citing the latest memories."""

    count: int
    last_at: datetime
    memory_ids: list[str]  # oldest first, the latest MAX_CITED
    latest: str = ""  # snippet of the latest memory


@dataclass
class Statement:
    """A preference the customer stated."""

    kind: str  # channel | no_calls | stated
    text: str  # what was said (the matched words)
    at: datetime
    memory_id: str
    channel: int = 0  # for kind == "channel"


@dataclass
class Point:
    at: datetime
    score: float
    memory_id: str


@dataclass
class ProfileState:
    """Everything the profile needs, folded from memories in (occurred_at, memory_id) order."""

    schema: int = SCHEMA
    interaction_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    # The (occurred_at, memory_id) of the last memory folded: only later ones may follow.
    watermark_at: datetime | None = None
    watermark_id: str = ""
    last_contact: dict[int, Cited] = field(default_factory=dict)
    channel_use: dict[int, Tally] = field(default_factory=dict)
    open_issues: list[IssueGroup] = field(default_factory=list)
    resolved_issues: int = 0
    objections: dict[str, Tally] = field(default_factory=dict)
    statements: dict[str, Statement] = field(default_factory=dict)  # channel, no_calls
    stated: list[Statement] = field(default_factory=list)  # free-form, oldest first
    points: list[Point] = field(default_factory=list)


_STATE = pydantic.TypeAdapter(ProfileState)


def dump_state(state: ProfileState) -> str:
    return _STATE.dump_json(state).decode()


def load_state(raw: str | None) -> ProfileState | None:
    """The state in ``raw``, or None when it is missing, malformed, empty (an empty state is
    never cached) or of other rules."""
    if raw is None:
        return None
    try:
        state = _STATE.validate_json(raw)
    except (pydantic.ValidationError, ValueError):
        log.warning("memcrm.profile: ignoring a malformed cached profile")
        return None
    if state.schema != SCHEMA or state.interaction_count < 1 or state.watermark_at is None:
        return None
    return state


def order_key(memory: Memory) -> tuple[datetime, str]:
    return memory.interaction.occurred_at.astimezone(UTC), memory.memory_id


def follows(state: ProfileState, memory: Memory) -> bool:
    """Whether ``memory`` comes after everything folded into ``state``."""
    if state.watermark_at is None:
        return state.interaction_count == 0
    return order_key(memory) > (state.watermark_at, state.watermark_id)


# ---------------------------------------------------------------------------------------------
# Detection rules


_CH = (
    r"(?P<ch>e-?mail|mail|phone(?:\s+calls?)?|telephone|calls?|text(?:\s+messages?)?|texts|sms"
    r"|(?:live\s+)?chat|whatsapp)"
)
_I_WOULD = r"\bi(?:\s+would|\s*['\u2019]d)?\s+"
_CHANNEL_PATTERNS = (
    re.compile(
        r"\b(?:contact|reach)\s+me\s+(?:only\s+)?(?:by|via|through|over|on|at)\s+"
        r"(?:my\s+|the\s+)?" + _CH + r"\b",
        re.IGNORECASE,
    ),
    re.compile(r"\bonly\s+(?P<ch>e-?mail|text|sms|call|phone)\s+me\b", re.IGNORECASE),
    re.compile(r"\b(?P<ch>e-?mail|text|call|phone)\s+me\s+only\b", re.IGNORECASE),
    re.compile(
        _I_WOULD + r"(?:prefer|rather)\s+(?:to\s+be\s+contacted\s+|to\s+communicate\s+"
        r"|be\s+contacted\s+|contact\s+)?(?:(?:by|via|over|through|on)\s+)?(?:an?\s+)?"
        + _CH
        + r"\b",
        re.IGNORECASE,
    ),
)
_NO_CALL_PATTERNS = (
    re.compile(
        r"\b(?:please\s+)?(?:do\s+not|don['\u2019]?t|never|stop)\s+"
        r"(?:call|calling|phone|phoning|ring|ringing)\s+me\b",
        re.IGNORECASE,
    ),
    re.compile(r"\bno\s+(?:more\s+)?(?:phone\s+)?calls\b", re.IGNORECASE),
    re.compile(_I_WOULD + r"rather\s+not\s+be\s+(?:called|phoned|rung)\b", re.IGNORECASE),
)
_STATED_PATTERN = re.compile(_I_WOULD + r"(?:prefer|rather)\b[^.!?;\n]{3,}", re.IGNORECASE)


def _channel_word(word: str) -> Channel:
    w = word.lower()
    if w.startswith(("e", "mail")):
        return Channel.EMAIL
    if w.startswith(("text", "sms")):
        return Channel.SMS
    if w.startswith(("live", "chat", "whatsapp")):
        return Channel.CHAT
    return Channel.VOICE


@dataclass(frozen=True)
class Stated:
    """One preference found in a text, at ``start``."""

    kind: str
    text: str
    start: int
    channel: Channel = Channel.UNSPECIFIED


def stated_preferences(text: str) -> list[Stated]:
    """The preferences ``text`` states, in the order it states them (see the module rules)."""
    found: list[Stated] = []
    taken: list[tuple[int, int]] = []
    for pattern in _CHANNEL_PATTERNS:
        for m in pattern.finditer(text):
            channel = _channel_word(m.group("ch"))
            found.append(Stated("channel", _said(m.group(0)), m.start(), channel))
            taken.append(m.span())
    for pattern in _NO_CALL_PATTERNS:
        for m in pattern.finditer(text):
            found.append(Stated("no_calls", _said(m.group(0)), m.start()))
            taken.append(m.span())
    for m in _STATED_PATTERN.finditer(text):
        if not any(m.start() < end and start < m.end() for start, end in taken):
            found.append(Stated("stated", _said(m.group(0)), m.start()))
    found.sort(key=lambda s: s.start)
    return found


def _said(words: str) -> str:
    return snippet(words.strip(), 80)


def _from_customer(memory: Memory) -> bool:
    return memory.interaction.direction is not Direction.OUTBOUND


def _issue_name(raw: str) -> str:
    return _ISSUE_NAMES.get(raw, raw)


def _humanise(intent: str) -> str:
    words = " ".join(w for w in re.split(r"[^A-Za-z0-9]+", intent) if w)
    return words[:1].upper() + words[1:].lower()


def complaint_name(memory: Memory) -> str | None:
    """The issue a customer message complains about, or None when it is no complaint."""
    if not _from_customer(memory):
        return None
    e = memory.enrichment
    if e.issue is not None and e.issue.name != UNSPECIFIED_ISSUE:
        return _issue_name(e.issue.name)
    if e.sentiment is not None and e.sentiment.name == "negative" and e.intents:
        top = e.intents[0]
        words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", top.name) if w}
        if top.confidence >= COMPLAINT_INTENT_MIN and words & COMPLAINT_INTENT_WORDS:
            return _humanise(top.name)
    if e.issue is not None and not e.objections:
        return _issue_name(e.issue.name)
    return None


def marked_resolved(memory: Memory) -> bool:
    attributes = memory.interaction.attributes
    return any(attributes.get(k, "").strip().lower() in RESOLVED_VALUES for k in RESOLVED_KEYS)


def _sentiment_is(memory: Memory, name: str) -> bool:
    s = memory.enrichment.sentiment
    return s is not None and s.name == name


# ---------------------------------------------------------------------------------------------
# The fold


def fold(state: ProfileState, memory: Memory) -> ProfileState:
    """``state`` with ``memory`` folded in; ``state`` itself is left unchanged."""
    return _fold_into(copy.deepcopy(state), memory)


def fold_all(memories: Iterable[Memory], state: ProfileState | None = None) -> ProfileState:
    """The memories folded in (occurred_at, memory_id) order into a copy of ``state``."""
    result = ProfileState() if state is None else copy.deepcopy(state)
    for memory in sorted(memories, key=order_key):
        _fold_into(result, memory)
    return result


def _fold_into(state: ProfileState, memory: Memory) -> ProfileState:
    at, memory_id = order_key(memory)
    it = memory.interaction
    state.interaction_count += 1
    if state.first_seen is None or at < state.first_seen:
        state.first_seen = at
    if state.last_seen is None or at > state.last_seen:
        state.last_seen = at
    if state.watermark_at is None or (at, memory_id) > (state.watermark_at, state.watermark_id):
        state.watermark_at, state.watermark_id = at, memory_id
    state.last_contact[int(it.channel)] = Cited(at, memory_id)
    text = snippet(it.text or it.subject, SNIPPET_CHARS)

    _issues(state, memory, at, text)
    if not _from_customer(memory):
        return state
    if it.channel in _CONVERSATION:
        _tally(state.channel_use, int(it.channel), at, memory_id, text)
    for objection in memory.enrichment.objections:
        _tally(state.objections, objection.name, at, memory_id, text)
    for s in stated_preferences(it.text):
        _prefer(state, s, at, memory_id)
    if memory.enrichment.sentiment is not None:
        state.points.append(Point(at, memory.enrichment.sentiment_score, memory_id))
        del state.points[:-POINTS_KEPT]
    return state


def _tally(tallies: dict[K, Tally], key: K, at: datetime, memory_id: str, text: str) -> None:
    current = tallies.get(key)
    if current is None:
        tallies[key] = Tally(1, at, [memory_id], text)
        return
    current.count += 1
    current.last_at = at
    current.memory_ids.append(memory_id)
    del current.memory_ids[:-MAX_CITED]
    current.latest = text


def _issues(state: ProfileState, memory: Memory, at: datetime, text: str) -> None:
    thread = memory.interaction.thread_id
    resolves = marked_resolved(memory) or (
        _from_customer(memory) and _sentiment_is(memory, "positive")
    )
    if resolves:
        about = {
            _issue_name(x).lower()
            for x in (
                memory.enrichment.issue.name if memory.enrichment.issue else "",
                memory.interaction.attributes.get("issue", ""),
            )
            if x
        }
        sweeping = marked_resolved(memory) and not thread and not about

        def related(g: IssueGroup) -> bool:
            return (
                (bool(thread) and thread in g.threads)
                or g.name.lower() in about
                or (sweeping and not g.threads)
            )

        still_open = [g for g in state.open_issues if not related(g)]
        state.resolved_issues += len(state.open_issues) - len(still_open)
        state.open_issues = still_open
        return
    name = complaint_name(memory)
    if name is None:
        return
    group = next((g for g in state.open_issues if thread and thread in g.threads), None)
    if group is None:
        group = next((g for g in state.open_issues if g.name.lower() == name.lower()), None)
    if group is None:
        state.open_issues.append(
            IssueGroup(name, [thread] if thread else [], at, at, 1, [memory.memory_id], text)
        )
        return
    if thread and thread not in group.threads:
        group.threads.append(thread)
    group.last_at = at
    group.count += 1
    group.memory_ids.append(memory.memory_id)
    if len(group.memory_ids) > MAX_CITED:
        del group.memory_ids[1]  # keep the complaint that opened it
    group.latest = text


def _prefer(state: ProfileState, s: Stated, at: datetime, memory_id: str) -> None:
    statement = Statement(s.kind, s.text, at, memory_id, int(s.channel))
    if s.kind == "stated":
        key = s.text.lower()
        state.stated = [x for x in state.stated if x.text.lower() != key] + [statement]
        del state.stated[:-STATED_KEPT]
        return
    state.statements[s.kind] = statement
    phone = state.statements.get("channel")
    if s.kind == "channel" and s.channel is Channel.VOICE:
        state.statements.pop("no_calls", None)
    elif s.kind == "no_calls" and phone is not None and phone.channel == Channel.VOICE:
        state.statements.pop("channel", None)


# ---------------------------------------------------------------------------------------------
# Rendering


def day(at: datetime) -> str:
    """``3 May 2026`` (UTC, English month names whatever the locale)."""
    d = at.astimezone(UTC)
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def _quote(text: str) -> str:
    return f": “{text}”" if text else ""


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def trend(points: Sequence[Point]) -> SentimentTrend:
    pts = tuple(SentimentPoint(p.at.astimezone(UTC), p.score, p.memory_id) for p in points)
    n = len(pts)
    if n < 2:
        return SentimentTrend("unknown", pts[0].score if pts else 0.0, 0.0, pts)
    w = min(TREND_WINDOW, n // 2)
    recent = sum(p.score for p in pts[n - w :]) / w
    previous = sum(p.score for p in pts[n - 2 * w : n - w]) / w
    direction = "steady"
    if recent - previous > TREND_THRESHOLD:
        direction = "improving"
    elif previous - recent > TREND_THRESHOLD:
        direction = "worsening"
    return SentimentTrend(direction, recent, previous, pts)


def _channel_use(state: ProfileState) -> tuple[Channel, Tally, int] | None:
    total = sum(t.count for t in state.channel_use.values())
    if total < CHANNEL_USE_MIN:
        return None
    for channel, tally in sorted(state.channel_use.items()):
        if 2 * tally.count > total:
            return Channel(channel), tally, total
    return None


def render(state: ProfileState, customer_id: str, as_of: datetime) -> CustomerProfile:
    """The profile the state stands for; ``as_of`` is only reported, never used in a claim."""
    issues = tuple(
        ProfileItem(
            f"{g.name}, open since {day(g.since)} ({g.count} message{'s' if g.count > 1 else ''})"
            + _quote(g.latest),
            tuple(g.memory_ids),
        )
        for g in state.open_issues
    )
    ranked = sorted(
        state.objections.items(), key=lambda kv: (-kv[1].count, -kv[1].last_at.timestamp(), kv[0])
    )
    objections = tuple(
        ProfileItem(
            f"{label.capitalize()} objection raised {_times(t.count)}, last on {day(t.last_at)}"
            + _quote(t.latest),
            tuple(t.memory_ids),
        )
        for label, t in ranked
    )
    preferences: list[ProfileItem] = []
    phrases: list[str] = []
    channel = state.statements.get("channel")
    if channel is not None:
        name = _CHANNEL_NAMES[Channel(channel.channel)]
        preferences.append(
            ProfileItem(
                f"Prefers to be contacted by {name} (said on {day(channel.at)}): “{channel.text}”",
                (channel.memory_id,),
            )
        )
        phrases.append(f"asked to be contacted by {name}")
    no_calls = state.statements.get("no_calls")
    if no_calls is not None:
        preferences.append(
            ProfileItem(
                f"Does not want phone calls (said on {day(no_calls.at)}): “{no_calls.text}”",
                (no_calls.memory_id,),
            )
        )
        phrases.append("asked not to be called")
    for s in reversed(state.stated):
        preferences.append(
            ProfileItem(f"Stated preference (on {day(s.at)}): “{s.text}”", (s.memory_id,))
        )
        phrases.append(f"said “{s.text}”")
    use = _channel_use(state)
    if use is not None:
        used, tally, total = use
        preferences.append(
            ProfileItem(
                f"Mostly writes by {_CHANNEL_NAMES[used]} ({tally.count} of {total} messages)",
                tuple(tally.memory_ids),
            )
        )
    contacts = tuple(
        ChannelContact(Channel(c), x.at.astimezone(UTC), x.memory_id)
        for c, x in sorted(
            state.last_contact.items(), key=lambda kv: (-kv[1].at.timestamp(), kv[0])
        )
    )
    sentiment = trend(state.points)

    sentences: list[str] = []
    if state.first_seen is not None and contacts:
        last = contacts[0]
        by = _CHANNEL_NAMES[last.channel]
        if state.interaction_count == 1:
            sentences.append(f"In touch once, on {day(state.first_seen)} by {by}.")
        else:
            mostly = f", mostly by {_CHANNEL_NAMES[use[0]]}" if use is not None else ""
            sentences.append(
                f"In touch {state.interaction_count} times since {day(state.first_seen)}"
                f"{mostly}; last on {day(last.at)} by {by}."
            )
    if sentiment.direction != "unknown":
        sentences.append(
            f"Sentiment is {sentiment.direction} ({sentiment.recent:+.2f} recently"
            f" vs {sentiment.previous:+.2f} before)."
        )
    if state.open_issues:
        listed = ", ".join(f"{g.name} since {day(g.since)}" for g in state.open_issues)
        plural = "s" if len(state.open_issues) > 1 else ""
        sentences.append(f"Open issue{plural}: {listed}.")
    elif state.resolved_issues:
        sentences.append(f"No open issues ({state.resolved_issues} resolved).")
    if ranked:
        listed = ", ".join(f"{label} ({t.count}\u00d7)" for label, t in ranked)
        sentences.append(f"Objection{'s' if len(ranked) > 1 else ''} raised: {listed}.")
    if phrases:
        sentences.append("Preferences: " + "; ".join(phrases) + ".")

    return CustomerProfile(
        customer_id=customer_id,
        as_of=as_of,
        interaction_count=state.interaction_count,
        first_seen=state.first_seen.astimezone(UTC) if state.first_seen else None,
        last_seen=state.last_seen.astimezone(UTC) if state.last_seen else None,
        summary=" ".join(sentences),
        open_issues=issues,
        objections=objections,
        preferences=tuple(preferences),
        sentiment_trend=sentiment,
        last_contact=contacts,
    )


# ---------------------------------------------------------------------------------------------
# Serving and keeping it up to date


class Profiles:
    """Customer profiles: the state of "now" cached in Redis, PostgreSQL the source of truth."""

    def __init__(self, store: MemoryStore, hot: HotState) -> None:
        self._store = store
        self._hot = hot

    def get(
        self, tenant_id: str, customer_id: str, *, as_of: datetime | None = None
    ) -> CustomerProfile:
        """The profile as of ``as_of`` (None: now); NotFound when nothing is known by then."""
        check_id("customer_id", customer_id)
        if as_of is not None:
            state = self.rebuild(tenant_id, customer_id, as_of=as_of)
            if state.interaction_count == 0:
                raise NotFound("customer", customer_id)
            return render(state, customer_id, as_of)
        now = datetime.now(UTC)
        cached = load_state(self._hot.profile(tenant_id, customer_id))
        if cached is not None:
            return render(cached, customer_id, now)
        state = self.rebuild(tenant_id, customer_id)
        if state.interaction_count == 0:
            raise NotFound("customer", customer_id)
        # Only into an empty slot: an ingestion that wrote meanwhile knows more than we do.
        self._hot.update_profile(
            tenant_id, customer_id, functools.partial(_fill, dump_state(state))
        )
        return render(state, customer_id, now)

    def view(
        self,
        tenant_id: str,
        customer_id: str,
        *,
        as_of: datetime | None = None,
        render_at: datetime | None = None,
    ) -> tuple[CustomerProfile, ProfileState] | None:
        """The profile and the state it renders (decisions read both); None for a customer
        with nothing recorded by ``as_of``. Now: from Redis when cached, without caching a
        rebuild (``get`` does that); at ``as_of``: rebuilt from PostgreSQL. Rendered as at
        ``render_at`` (default: ``as_of``, else now), so a replay renders the same profile."""
        check_id("customer_id", customer_id)
        state = None if as_of is not None else load_state(self._hot.profile(tenant_id, customer_id))
        if state is None:
            state = self.rebuild(tenant_id, customer_id, as_of=as_of)
        if state.interaction_count == 0:
            return None
        moment = render_at or as_of or datetime.now(UTC)
        return render(state, customer_id, moment), state

    def rebuild(
        self, tenant_id: str, customer_id: str, *, as_of: datetime | None = None
    ) -> ProfileState:
        """The state folded from PostgreSQL: every memory visible at ``as_of`` (None: now)."""
        memories = self._store.customer_memories(tenant_id, customer_id, as_of=as_of or _LATEST)
        return fold_all(memories)

    def on_stored(self, tenant_id: str, memories: Sequence[Memory]) -> None:
        """Bring cached states up to date with newly stored (non-duplicate) memories.

        Incremental when every new memory of a customer is a first version that comes after
        what the cached state has folded; otherwise (nothing cached, a correction, a memory
        older than the state) rebuilt from PostgreSQL, in one query for the whole batch. The
        new states are written in one compare-and-set; a customer whose entry another writer
        changed meanwhile is redone alone under Redis's optimistic WATCH/MULTI. Never raises:
        the memories are stored already, and a stale entry is dropped instead.
        """
        by_customer: dict[str, list[Memory]] = {}
        for memory in memories:
            by_customer.setdefault(memory.interaction.customer_id, []).append(memory)
        customers = sorted(by_customer)
        for fresh in by_customer.values():
            fresh.sort(key=order_key)
        cached = self._hot.profiles(tenant_id, customers)
        if cached is None:
            return  # Redis is down: the next read rebuilds from PostgreSQL
        try:
            advanced = {
                c: self._incremental(current, by_customer[c])
                for c, current in zip(customers, cached, strict=True)
            }
            stale = [c for c, state in advanced.items() if state is None]
            rebuilt = self._rebuild_many(tenant_id, stale)
            swaps = {
                c: (current, advanced[c] or dump_state(rebuilt[c]))
                for c, current in zip(customers, cached, strict=True)
            }
        except Exception:
            log.exception("memcrm.profile: cannot update cached profiles; dropping them")
            for c in customers:
                self._hot.forget_profile(tenant_id, c)
            return
        contended = self._hot.swap_profiles(tenant_id, swaps)
        for customer_id in sorted(contended or ()):
            fresh = by_customer[customer_id]
            advance = functools.partial(self._advance, tenant_id, customer_id, fresh)
            try:
                if not self._hot.update_profile(tenant_id, customer_id, advance):
                    return  # Redis is down: do not wait on it for every customer of the batch
            except Exception:
                log.exception("memcrm.profile: cannot update the cached profile; dropping it")
                self._hot.forget_profile(tenant_id, customer_id)

    @staticmethod
    def _incremental(current: str | None, fresh: list[Memory]) -> str | None:
        """The cached state advanced by ``fresh`` when that can be done without PostgreSQL."""
        state = load_state(current)
        if state is not None and all(m.version == 1 for m in fresh) and follows(state, fresh[0]):
            return dump_state(fold_all(fresh, state))
        return None

    def _advance(
        self, tenant_id: str, customer_id: str, fresh: list[Memory], current: str | None
    ) -> str:
        return self._incremental(current, fresh) or dump_state(self.rebuild(tenant_id, customer_id))

    def _rebuild_many(self, tenant_id: str, customer_ids: Sequence[str]) -> dict[str, ProfileState]:
        """``rebuild`` (as of now) for several customers, in one query."""
        if not customer_ids:
            return {}
        memories = self._store.customers_memories(tenant_id, customer_ids, as_of=_LATEST)
        return {c: fold_all(memories.get(c, [])) for c in customer_ids}


def _fill(value: str, current: str | None) -> str | None:
    return value if load_state(current) is None else None
