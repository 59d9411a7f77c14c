"""The built-in next-best-action catalog for a customer-service / airline setting.

An action is something the company can do for a customer on some channels; ``value`` is the
business value of the action succeeding (accepted and resolved, or converted for an upsell), in
arbitrary but comparable units. The recommender ranks actions by ``propensity x value``.

The shipped propensity model was trained on exactly this catalog (ids, order and texts): the
model artifact's manifest records :func:`catalog_fingerprint` and ``NbaScorer`` refuses a
catalog that does not match, because the model embeds each action's title and description.
This module imports nothing from the rest of memcrm except the core types, so both
``memcrm.models`` (training) and ``memcrm.decisions`` (serving) can use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from memcrm.core.types import Channel


@dataclass(frozen=True, slots=True)
class Action:
    action_id: str
    title: str
    description: str
    channels: frozenset[Channel]
    value: float

    def can_go_out_on(self, channel: Channel) -> bool:
        """``Channel.UNSPECIFIED`` means the caller accepts any channel."""
        return channel is Channel.UNSPECIFIED or channel in self.channels

    @property
    def text(self) -> str:
        """What the model reads about the action: title and description."""
        return f"{self.title}. {self.description}"


def _channels(*channels: Channel) -> frozenset[Channel]:
    return frozenset(channels)


BUILTIN_CATALOG: tuple[Action, ...] = (
    Action(
        action_id="apology_credit",
        title="Apologise and offer a travel credit",
        description=(
            "Send a personal apology for the poor experience together with a travel credit "
            "the customer can use on a future booking."
        ),
        channels=_channels(Channel.EMAIL, Channel.CHAT, Channel.SMS, Channel.SOCIAL, Channel.VOICE),
        value=2.0,
    ),
    Action(
        action_id="rebooking_assist",
        title="Proactively help rebook the flight",
        description=(
            "Reach out about the cancelled or delayed flight and rebook the customer on the "
            "next good connection without them having to ask."
        ),
        channels=_channels(Channel.VOICE, Channel.CHAT, Channel.SMS, Channel.EMAIL, Channel.WEB),
        value=3.0,
    ),
    Action(
        action_id="escalate_to_agent",
        title="Escalate to a senior agent who calls back",
        description=(
            "Hand the case to a senior customer-service agent who owns it end to end and "
            "calls the customer back."
        ),
        channels=_channels(Channel.VOICE, Channel.CHAT, Channel.TICKET, Channel.EMAIL),
        value=2.5,
    ),
    Action(
        action_id="baggage_trace",
        title="Open a baggage trace and keep the customer updated",
        description=(
            "Open a trace for the lost or damaged bag, share the reference and send updates "
            "until the bag is delivered or the claim is settled."
        ),
        channels=_channels(Channel.EMAIL, Channel.SMS, Channel.CHAT, Channel.TICKET, Channel.WEB),
        value=3.0,
    ),
    Action(
        action_id="seat_upgrade_offer",
        title="Offer a paid seat upgrade",
        description=(
            "Offer an upgrade to a better seat or cabin on the customer's next flight at a "
            "discounted price."
        ),
        channels=_channels(Channel.EMAIL, Channel.WEB, Channel.SMS, Channel.PURCHASE),
        value=4.0,
    ),
    Action(
        action_id="loyalty_thanks",
        title="Thank the customer with loyalty points",
        description=(
            "Thank the customer for flying with us and for the kind words, and add bonus "
            "loyalty points to their account."
        ),
        channels=_channels(Channel.EMAIL, Channel.SMS, Channel.SOCIAL, Channel.WEB),
        value=1.5,
    ),
)


def actions_for_channel(catalog: Iterable[Action], channel: Channel) -> tuple[Action, ...]:
    return tuple(action for action in catalog if action.can_go_out_on(channel))


def catalog_fingerprint(catalog: Sequence[Action]) -> str:
    """sha256 over the ids and texts in order: what a trained model depends on (not values)."""
    payload = [[a.action_id, a.title, a.description] for a in catalog]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()
