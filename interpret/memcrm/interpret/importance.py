"""How much a memory should weigh in recall and decisions (0..1).

No outcome data exists yet to learn this from, so it is a documented rule over what the heads
understood, combined as a noisy-OR so that each signal can only raise importance and the result
stays within 0..1:

    importance = 1 - (1 - base) * prod(1 - s_i)

with base 0.1 and the signals
    negative sentiment   0.45 * P(negative)        an unhappy customer is remembered
    complaint            0.35 * issue confidence   a concrete problem that may stay open
    objection            0.35 * top confidence     a reason the customer hesitates
    commitments          0.20 if money, an order/ticket number or a date is mentioned
    channel effort       0.20 voice, meeting, ticket; 0.15 purchase; 0.10 email; else 0
                         (the customer took the trouble, or money changed hands)
    positive sentiment   0.15 * P(positive)        praise is worth remembering, less so

Outbound messages (the company speaking) count half: they matter mostly as context.
"""

from __future__ import annotations

from collections.abc import Sequence

from memcrm.core.types import Channel, Direction, Entity, Label

BASE = 0.1
_COMMITMENT_TYPES = frozenset({"money", "order_number", "ticket_number", "date"})
_CHANNEL_EFFORT = {
    Channel.VOICE: 0.20,
    Channel.MEETING: 0.20,
    Channel.TICKET: 0.20,
    Channel.PURCHASE: 0.15,
    Channel.EMAIL: 0.10,
}


def importance(
    *,
    sentiment: Label | None,
    issue: Label | None,
    objections: Sequence[Label],
    entities: Sequence[Entity],
    channel: Channel,
    direction: Direction,
) -> float:
    signals: list[float] = []
    if sentiment is not None:
        if sentiment.name == "negative":
            signals.append(0.45 * sentiment.confidence)
        elif sentiment.name == "positive":
            signals.append(0.15 * sentiment.confidence)
    if issue is not None:
        signals.append(0.35 * issue.confidence)
    if objections:
        signals.append(0.35 * max(o.confidence for o in objections))
    if any(e.type in _COMMITMENT_TYPES for e in entities):
        signals.append(0.20)
    signals.append(_CHANNEL_EFFORT.get(channel, 0.0))
    keep = 1.0 - BASE
    for s in signals:
        keep *= 1.0 - min(max(s, 0.0), 1.0)
    value = 1.0 - keep
    if direction is Direction.OUTBOUND:
        value *= 0.5
    return round(value, 6)
