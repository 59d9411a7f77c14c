"""Validation of client input, raising ``InvalidArgument`` that names the proto field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel, Direction, Interaction

ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
MAX_TEXT_BYTES = 32 * 1024
MAX_FUTURE = timedelta(days=1)
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_BYTES = 1024
MAX_BATCH = 500
DEFAULT_TOP_K = 10
MAX_TOP_K = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_TOP_N = 3
MAX_CONTEXT_BYTES = MAX_TEXT_BYTES

# WatchSignals: customers one stream may filter on.
MAX_WATCHED_CUSTOMERS = 1000


def check_id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 characters of [A-Za-z0-9._:@/-]")
    return value


def check_text(field: str, value: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    if len(value.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes of UTF-8")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def check_bounded(field: str, value: int, default: int, maximum: int) -> int:
    """An optional positive count: 0 means the default."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value == 0:
        return default
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value


def check_channel(field: str, value: int, *, required: bool) -> Channel:
    try:
        channel = Channel(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown channel {value}") from None
    if required and channel is Channel.UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    return channel


def check_direction(field: str, value: int) -> Direction:
    try:
        return Direction(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown direction {value}") from None


def check_attributes(field: str, attributes: Mapping[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(field, f"must hold at most {MAX_ATTRIBUTES} entries")
    for key, value in attributes.items():
        if not key:
            raise InvalidArgument(field, "keys must not be empty")
        check_text(f"{field}[{key}]", key, MAX_ATTRIBUTE_BYTES)
        check_text(f"{field}[{key}]", value, MAX_ATTRIBUTE_BYTES)
    return dict(attributes)


def check_interaction(interaction: Interaction, prefix: str, now: datetime) -> Interaction:
    """Every rule of the contract's ``Interaction``; fields named as ``<prefix>.<field>``."""
    check_id(f"{prefix}.interaction_id", interaction.interaction_id)
    check_id(f"{prefix}.customer_id", interaction.customer_id)
    check_channel(f"{prefix}.channel", interaction.channel, required=True)
    check_direction(f"{prefix}.direction", interaction.direction)
    occurred = interaction.occurred_at
    if occurred.tzinfo is None:
        raise InvalidArgument(f"{prefix}.occurred_at", "must carry a time zone")
    if occurred > now.astimezone(UTC) + MAX_FUTURE:
        raise InvalidArgument(f"{prefix}.occurred_at", "must not be more than 1 day in the future")
    check_text(f"{prefix}.text", interaction.text)
    check_text(f"{prefix}.subject", interaction.subject, MAX_ATTRIBUTE_BYTES)
    for name in ("actor_id", "thread_id"):
        value = getattr(interaction, name)
        if value:
            check_id(f"{prefix}.{name}", value)
    check_attributes(f"{prefix}.attributes", interaction.attributes)
    return interaction
