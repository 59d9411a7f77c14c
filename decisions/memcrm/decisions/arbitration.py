"""Arbitration: filter every catalog action by its policies, then rank what is left.

Why every action is kept: an enterprise must be able to ask why a customer was *not* offered
something, so the result records each action considered -- either its numbers or the first
policy that filtered it, with the rule's text and the feature values it read -- ready to be
stored as the decision record (``Arbitration.to_json``).

Filters, in this order (the first that fails is recorded; later ones are not evaluated):

1. ``channel`` -- the action cannot go out on the decision's channel (an unspecified channel
   accepts every channel of the action);
2. ``consent`` -- a ``marketing: true`` action and the customer's consent does not allow it
   (the catalog's ``marketing_consent`` mode, see ``memcrm.decisions.contact``);
3. ``eligibility``, 4. ``applicability``, 5. ``suitability`` -- the action's rules, each list in
   file order; a rule that does not hold filters the action;
6. ``suppression`` -- the action is suppressed after rejections;
7. ``contact`` -- every channel the action could go out on is closed by a contact cap (the
   action's own caps or the catalog's); when only some are, the action stays with the rest.

Ranking, as in the enterprise engines (Pega's arbitration)::

    priority = propensity x context_weight x value x lever

``propensity`` comes from the caller (the propensity model is not ours): a mapping from action
id to P(success), or a callable given the ids that passed the filters (in catalog order, once
per decision, not called when none passed). Every passing action needs a finite propensity in
[0, 1]; anything else is the caller's bug and raises ValueError. Ties in priority go to the
smaller action id, so the same inputs always give the same ranking. The ``top_n`` best are
``selected``; every passing action has its rank.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeAlias

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel
from memcrm.decisions.contact import (
    UNKNOWN_CONSENT,
    CapCheck,
    Consent,
    ContactEvent,
    OutcomeEvent,
    check_suppression,
    open_channels,
)
from memcrm.decisions.policy import DecisionContext, Features, Json, channel_name, json_value
from memcrm.decisions.tenant_catalog import ActionSpec, TenantCatalog

Propensities: TypeAlias = Mapping[str, float] | Callable[[Sequence[str]], Mapping[str, float]]


class FilterKind(StrEnum):
    CHANNEL = "channel"
    CONSENT = "consent"
    ELIGIBILITY = "eligibility"
    APPLICABILITY = "applicability"
    SUITABILITY = "suitability"
    SUPPRESSION = "suppression"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """What the contact policy reads: past contacts, recorded outcomes and consent."""

    contacts: tuple[ContactEvent, ...] = ()
    outcomes: tuple[OutcomeEvent, ...] = ()
    consent: Consent = UNKNOWN_CONSENT


@dataclass(frozen=True, slots=True)
class Ranked:
    """An action that passed every filter, with the numbers that ranked it."""

    action_id: str
    title: str
    propensity: float
    context_weight: float
    value: float
    lever: float
    priority: float
    rank: int  # 1 = best among the actions that passed
    selected: bool  # among the top_n returned
    channels: tuple[str, ...]  # the channels it may go out on now, by name

    def to_dict(self) -> dict[str, Json]:
        return {
            "action_id": self.action_id,
            "title": self.title,
            "status": "selected" if self.selected else "ranked",
            "rank": self.rank,
            "propensity": self.propensity,
            "context_weight": self.context_weight,
            "value": self.value,
            "lever": self.lever,
            "priority": self.priority,
            "channels": list(self.channels),
        }


@dataclass(frozen=True, slots=True)
class Filtered:
    """An action a policy filtered out, and why."""

    action_id: str
    title: str
    kind: FilterKind
    policy: str  # where in the catalog: "eligibility[1]", "suppress", "contact[0]", ...
    rule: str  # the rule's text or the policy in words
    reads: Mapping[str, Json] = field(default_factory=dict)  # the values it looked at

    def to_dict(self) -> dict[str, Json]:
        return {
            "action_id": self.action_id,
            "title": self.title,
            "status": "filtered",
            "kind": str(self.kind),
            "policy": self.policy,
            "rule": self.rule,
            "reads": dict(self.reads),
        }


Considered: TypeAlias = Ranked | Filtered


@dataclass(frozen=True, slots=True)
class Arbitration:
    """The outcome for every action of the catalog, in catalog order."""

    catalog_version: str
    channel: str  # the decision's channel by name, "unspecified" for any
    intent: str
    decided_at: datetime
    top_n: int
    considered: tuple[Considered, ...]

    @property
    def ranked(self) -> tuple[Ranked, ...]:
        """Every action that passed, best first."""
        ranked = [c for c in self.considered if isinstance(c, Ranked)]
        return tuple(sorted(ranked, key=lambda r: r.rank))

    @property
    def top(self) -> tuple[Ranked, ...]:
        """The selected actions, best first (at most ``top_n``)."""
        return tuple(r for r in self.ranked if r.selected)

    @property
    def filtered(self) -> tuple[Filtered, ...]:
        return tuple(c for c in self.considered if isinstance(c, Filtered))

    def to_dict(self) -> dict[str, Json]:
        return {
            "catalog_version": self.catalog_version,
            "channel": self.channel,
            "intent": self.intent,
            "decided_at": self.decided_at.astimezone(UTC).isoformat(),
            "top_n": self.top_n,
            "top": [r.action_id for r in self.top],
            "considered": [c.to_dict() for c in self.considered],
        }

    def to_json(self) -> str:
        """The record as JSON (no NaN or infinity: the numbers are checked finite)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)


def arbitrate(
    catalog: TenantCatalog,
    context: DecisionContext,
    features: Features,
    history: CustomerHistory,
    propensities: Propensities,
    *,
    top_n: int,
) -> Arbitration:
    """Filter and rank every action of ``catalog`` for one decision (see the module doc).

    ``features`` must have been built for ``context`` (same ``now``) with ``catalog.schema``.
    """
    if top_n < 1:
        raise InvalidArgument("top_n", "must be at least 1")
    if features.now != context.now.astimezone(UTC):
        raise ValueError("features were built for another moment than the context")
    if features.schema != catalog.schema:
        raise ValueError("features were built with another schema than the catalog's")
    outcomes: list[Considered | tuple[ActionSpec, tuple[str, ...]]] = [
        _filter(spec, catalog, context, features, history) for spec in catalog.actions
    ]
    passing = [o[0].action_id for o in outcomes if isinstance(o, tuple)]
    scores = _propensities(propensities, passing)
    weights: dict[str, float] = {}
    priorities: dict[str, float] = {}
    for o in outcomes:
        if isinstance(o, tuple):
            spec = o[0]
            action_id = spec.action_id
            weights[action_id] = catalog.context_weight(action_id, context.channel, context.intent)
            priorities[action_id] = (
                scores[action_id] * weights[action_id] * spec.action.value * spec.lever
            )
    order = sorted(priorities, key=lambda action_id: (-priorities[action_id], action_id))
    rank = {action_id: i for i, action_id in enumerate(order, start=1)}
    considered: list[Considered] = []
    for o in outcomes:
        if not isinstance(o, tuple):
            considered.append(o)
            continue
        spec, channels = o
        action_id = spec.action_id
        considered.append(
            Ranked(
                action_id=action_id,
                title=spec.action.title,
                propensity=scores[action_id],
                context_weight=weights[action_id],
                value=spec.action.value,
                lever=spec.lever,
                priority=priorities[action_id],
                rank=rank[action_id],
                selected=rank[action_id] <= top_n,
                channels=channels,
            )
        )
    return Arbitration(
        catalog_version=catalog.version,
        channel=channel_name(context.channel),
        intent=context.intent,
        decided_at=features.now,
        top_n=top_n,
        considered=tuple(considered),
    )


def _propensities(given: Propensities, passing: list[str]) -> dict[str, float]:
    if not passing:
        return {}
    scores = given(tuple(passing)) if callable(given) else given
    out: dict[str, float] = {}
    for action_id in passing:
        if action_id not in scores:
            raise ValueError(f"no propensity for action {action_id!r}")
        p = float(scores[action_id])
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"propensity of {action_id!r} is {p!r}, not in [0, 1]")
        out[action_id] = p
    return out


def _filter(
    spec: ActionSpec,
    catalog: TenantCatalog,
    context: DecisionContext,
    features: Features,
    history: CustomerHistory,
) -> Filtered | tuple[ActionSpec, tuple[str, ...]]:
    """The first filter ``spec`` fails, or the spec and the channels it may go out on."""
    action = spec.action

    def filtered(kind: FilterKind, policy: str, rule: str, reads: dict[str, Json]) -> Filtered:
        return Filtered(action.action_id, action.title, kind, policy, rule, reads)

    if context.channel is Channel.UNSPECIFIED:
        candidates = action.channels
    else:
        candidates = action.channels & {context.channel}
    if not candidates:
        names = _names(action.channels)
        return filtered(
            FilterKind.CHANNEL,
            "channels",
            f"goes out on {', '.join(names)}",
            {"context.channel": channel_name(context.channel), "channels": list(names)},
        )
    consent = history.consent
    if spec.marketing and not consent.allows_marketing(catalog.marketing_consent):
        return filtered(
            FilterKind.CONSENT,
            "marketing",
            f"a marketing action needs consent ({catalog.marketing_consent})",
            {
                "consent.marketing": consent.marketing,
                "stated_at": json_value(consent.at),
                "interaction_id": consent.interaction_id or None,
                "mode": catalog.marketing_consent,
            },
        )
    for policy_rule in spec.rules:
        if not policy_rule.rule.holds(features):
            return filtered(
                FilterKind(policy_rule.kind.value),
                f"{policy_rule.kind}[{policy_rule.index}]",
                policy_rule.rule.text,
                policy_rule.rule.reads(features),
            )
    now = features.now
    if spec.suppress is not None:
        check = check_suppression(spec.suppress, history.outcomes, action.action_id, now)
        if check.active(now):
            return filtered(
                FilterKind.SUPPRESSION,
                "suppress",
                spec.suppress.text,
                {
                    "rejections": [json_value(at) for at in check.trigger],
                    "since": json_value(check.since),
                    "until": json_value(check.until),
                },
            )
    allowance = open_channels(
        candidates, action.action_id, spec.contact, catalog.contact, history.contacts, now
    )
    if not allowance.open:
        hit = allowance.hit
        return filtered(
            FilterKind.CONTACT,
            ", ".join(_cap_policy(c, spec, catalog) for c in hit),
            "; ".join(c.cap.text for c in hit),
            {"caps": [_cap_reads(c, spec, catalog) for c in hit]},
        )
    return spec, _names(allowance.open)


def _names(channels: frozenset[Channel]) -> tuple[str, ...]:
    return tuple(channel_name(c) for c in sorted(channels))


def _cap_policy(check: CapCheck, spec: ActionSpec, catalog: TenantCatalog) -> str:
    if check.action_id is None:
        return f"catalog contact[{catalog.contact.index(check.cap)}]"
    return f"contact[{spec.contact.index(check.cap)}]"


def _cap_reads(check: CapCheck, spec: ActionSpec, catalog: TenantCatalog) -> Json:
    return {
        "policy": _cap_policy(check, spec, catalog),
        "cap": check.cap.text,
        "counted": [
            {"action_id": c.action_id, "channel": channel_name(c.channel), "at": json_value(c.at)}
            for c in check.counted
        ],
        "until": json_value(check.until),
    }
