"""Contact policy, suppression and consent: pure functions over a customer's history.

Why pure functions over plain events: the same history must give the same answer when a
decision is made, replayed for an audit or tested, so nothing here reads a clock or a store.
The caller passes ``now`` and the customer's events up to it.

Windows: "the window of ``W`` ending now" is the closed interval ``[now - W, now]`` -- an event
exactly ``W`` before now is inside it, one second earlier is not -- and events after ``now`` are
ignored everywhere (they had not happened at ``now``; as-of replays rely on it). The rule
language (``memcrm.decisions.policy``) uses the same windows.

Contact caps (:class:`ContactCap`, ``{channel: email, max: 2, within: 7d}``): a cap is *hit*
when at least ``max`` counted contacts lie in the window ending now, so one more would exceed
it. An action's caps count that action's contacts; a catalog-wide cap counts every action's.
A cap with a channel counts and blocks only that channel; a cap without one counts every
channel and blocks them all. With a cap of 2 per 7d and contacts at ``t1 <= t2``, the action is
blocked until ``t1 + 7d`` inclusive and allowed one second later.

Suppression (:class:`Suppression`, ``{after_rejections: M, within: W, for: D}``): a rejection
of the action *triggers* a suppression when it is at least the ``M``-th rejection of that
action in the window of ``W`` ending at it (``W`` absent: ever). The action is suppressed from
the trigger to ``trigger + D`` inclusive, i.e. while the latest trigger lies in the window of
``D`` ending now. Old rejections keep counting while they are inside ``W``, so with no ``W``
every rejection after the ``M``-th suppresses again. Other outcomes neither count nor reset.

Consent: an interaction attribute ``consent.marketing`` states the customer's marketing
consent; the latest statement (by ``occurred_at``, at or before now) wins, and when statements
at the same instant disagree, the withdrawal wins. Values are read by
:func:`memcrm.decisions.policy.parse_bool` (``true``/``yes``/``1``, ``false``/``no``/``0``);
any other value states nothing. Under the default ``opt_out`` mode a marketing action needs
no statement but is ineligible after a ``false``; under ``opt_in`` it needs a ``true``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from memcrm.core.types import Channel, Interaction, Outcome
from memcrm.decisions.policy import channel_name, format_duration, parse_bool

CONSENT_MARKETING: Final = "consent.marketing"
ConsentMode = Literal["opt_out", "opt_in"]


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """The customer was contacted with ``action_id`` on ``channel`` at ``at``."""

    action_id: str
    channel: Channel
    at: datetime


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """The customer's response to ``action_id``, recorded at ``at``."""

    action_id: str
    outcome: Outcome
    at: datetime


def in_window(at: datetime, now: datetime, window: timedelta) -> bool:
    """Whether ``at`` lies in ``[now - window, now]`` (see the module doc)."""
    return now - window <= at <= now


def _check_aware(*times: datetime) -> None:
    for at in times:
        if at.tzinfo is None:
            raise ValueError(f"{at!r} must be timezone-aware")


# ---------------------------------------------------------------------------------------------
# Contact caps


@dataclass(frozen=True, slots=True)
class ContactCap:
    """At most ``max`` contacts within ``within``; on ``channel`` only, or on all channels."""

    max: int
    within: timedelta
    channel: Channel | None = None

    def __post_init__(self) -> None:
        if self.max < 1 or self.within <= timedelta(0):
            raise ValueError("a cap needs max >= 1 and a positive window")
        if self.channel is Channel.UNSPECIFIED:
            raise ValueError("a cap's channel is a real channel or None (every channel)")

    @property
    def text(self) -> str:
        where = f"on {channel_name(self.channel)}" if self.channel is not None else "in all"
        return f"at most {self.max} {where} within {format_duration(self.within)}"

    def blocks(self, channel: Channel) -> bool:
        return self.channel is None or self.channel is channel


@dataclass(frozen=True, slots=True)
class CapCheck:
    """A cap as it stands at ``now``: the contacts it counted, oldest first."""

    cap: ContactCap
    action_id: str | None  # None: a catalog-wide cap counting every action
    counted: tuple[ContactEvent, ...]

    @property
    def hit(self) -> bool:
        return len(self.counted) >= self.cap.max

    @property
    def until(self) -> datetime | None:
        """The last instant the cap stays hit if nothing else happens (inclusive)."""
        if not self.hit:
            return None
        return self.counted[-self.cap.max].at + self.cap.within


def check_cap(
    cap: ContactCap, contacts: Iterable[ContactEvent], now: datetime, *, action_id: str | None
) -> CapCheck:
    """Count the contacts ``cap`` counts at ``now`` (of ``action_id``, or of all when None)."""
    _check_aware(now)
    counted = sorted(
        (
            c
            for c in contacts
            if (action_id is None or c.action_id == action_id)
            and (cap.channel is None or c.channel is cap.channel)
            and in_window(c.at, now, cap.within)
        ),
        key=lambda c: (c.at, c.action_id, int(c.channel)),
    )
    return CapCheck(cap, action_id, tuple(counted))


@dataclass(frozen=True, slots=True)
class ChannelAllowance:
    """Which of the candidate channels are still open, and the caps that closed the others."""

    open: frozenset[Channel]
    hit: tuple[CapCheck, ...]


def open_channels(
    candidates: Collection[Channel],
    action_id: str,
    action_caps: Sequence[ContactCap],
    catalog_caps: Sequence[ContactCap],
    contacts: Sequence[ContactEvent],
    now: datetime,
) -> ChannelAllowance:
    """The ``candidates`` no hit cap blocks: the action's own caps count its own contacts,
    the catalog's count every action's contacts."""
    checks = [check_cap(c, contacts, now, action_id=action_id) for c in action_caps]
    checks += [check_cap(c, contacts, now, action_id=None) for c in catalog_caps]
    hit = tuple(c for c in checks if c.hit)
    still = frozenset(ch for ch in candidates if not any(c.cap.blocks(ch) for c in hit))
    return ChannelAllowance(still, hit)


# ---------------------------------------------------------------------------------------------
# Suppression


@dataclass(frozen=True, slots=True)
class Suppression:
    """Suppress an action for ``duration`` after ``after_rejections`` rejections (in ``within``)."""

    after_rejections: int
    duration: timedelta
    within: timedelta | None = None

    def __post_init__(self) -> None:
        if self.after_rejections < 1 or self.duration <= timedelta(0):
            raise ValueError("suppression needs after_rejections >= 1 and a positive duration")
        if self.within is not None and self.within <= timedelta(0):
            raise ValueError("suppression's within must be positive")

    @property
    def text(self) -> str:
        n = self.after_rejections
        counted = f"{n} rejection{'s' if n > 1 else ''}"
        if self.within is not None:
            counted += f" within {format_duration(self.within)}"
        return f"suppressed for {format_duration(self.duration)} after {counted}"


@dataclass(frozen=True, slots=True)
class SuppressionCheck:
    policy: Suppression
    # The rejections that triggered the latest suppression, oldest first; () when none did.
    trigger: tuple[datetime, ...]

    @property
    def since(self) -> datetime | None:
        return self.trigger[-1] if self.trigger else None

    @property
    def until(self) -> datetime | None:
        """The last instant (inclusive) of the latest suppression."""
        return self.trigger[-1] + self.policy.duration if self.trigger else None

    def active(self, now: datetime) -> bool:
        return self.until is not None and now <= self.until


def check_suppression(
    policy: Suppression, outcomes: Iterable[OutcomeEvent], action_id: str, now: datetime
) -> SuppressionCheck:
    """The latest suppression of ``action_id`` triggered at or before ``now``."""
    _check_aware(now)
    rejections = sorted(
        o.at
        for o in outcomes
        if o.action_id == action_id and o.outcome is Outcome.REJECTED and o.at <= now
    )
    m = policy.after_rejections
    for i in range(len(rejections) - 1, m - 2, -1):
        first = rejections[i - m + 1]
        if policy.within is None or rejections[i] - first <= policy.within:
            return SuppressionCheck(policy, tuple(rejections[i - m + 1 : i + 1]))
    return SuppressionCheck(policy, ())


# ---------------------------------------------------------------------------------------------
# Consent and attributes


@dataclass(frozen=True, slots=True)
class AttributeStatement:
    """The latest value of an interaction attribute and the interaction that set it."""

    value: str
    at: datetime
    interaction_id: str


def latest_attributes(
    interactions: Iterable[Interaction], now: datetime, keys: Collection[str] | None = None
) -> dict[str, AttributeStatement]:
    """Per attribute key (of ``keys``, or all), the latest value at or before ``now``.

    Latest by ``occurred_at``; at the same instant the greater interaction id wins, so the
    answer does not depend on the order of ``interactions``.
    """
    _check_aware(now)
    latest: dict[str, AttributeStatement] = {}
    for it in interactions:
        at = it.occurred_at.astimezone(UTC)
        if at > now:
            continue
        for key, value in it.attributes.items():
            if keys is not None and key not in keys:
                continue
            current = latest.get(key)
            if current is None or (at, it.interaction_id) > (current.at, current.interaction_id):
                latest[key] = AttributeStatement(value, at, it.interaction_id)
    return latest


@dataclass(frozen=True, slots=True)
class Consent:
    """The customer's marketing consent: None when never stated."""

    marketing: bool | None = None
    at: datetime | None = None
    interaction_id: str = ""

    def allows_marketing(self, mode: ConsentMode = "opt_out") -> bool:
        if mode == "opt_in":
            return self.marketing is True
        return self.marketing is not False


UNKNOWN_CONSENT: Final = Consent()


def marketing_consent(interactions: Iterable[Interaction], now: datetime) -> Consent:
    """The latest ``consent.marketing`` statement at or before ``now`` (see the module doc)."""
    _check_aware(now)
    best: tuple[datetime, bool, str] | None = None
    for it in interactions:
        raw = it.attributes.get(CONSENT_MARKETING)
        value = parse_bool(raw) if raw is not None else None
        at = it.occurred_at.astimezone(UTC)
        if value is None or at > now:
            continue
        # Later wins; at the same instant a withdrawal (False sorts first) wins, then the id.
        key = (at, not value, it.interaction_id)
        if best is None or key > (best[0], not best[1], best[2]):
            best = (at, value, it.interaction_id)
    if best is None:
        return UNKNOWN_CONSENT
    return Consent(best[1], best[0], best[2])
