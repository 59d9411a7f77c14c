"""Redaction of detected PII before a text is stored and embedded.

Why here and not in storage: what is redacted must never reach PostgreSQL nor the encoder, so
ingestion redacts first and then stores and embeds only ``Redacted.text``. Offsets of what
remains are remapped so every entity still satisfies ``text[start:end] == entity.text``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from memcrm.core.tenants import DEFAULT_REDACT, PII_TYPES, PiiConfig
from memcrm.core.types import Entity

__all__ = ["PII_TYPES", "PiiPolicy", "Redacted", "placeholder", "redact"]

PiiMode = Literal["store_as_is", "redact"]
MODES: Final = frozenset({"store_as_is", "redact"})


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """A tenant's choice: keep the text, or replace the spans of ``redact_types``."""

    mode: PiiMode = "redact"
    redact_types: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_REDACT))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown PII mode {self.mode!r}; known: {sorted(MODES)}")
        unknown = self.redact_types - PII_TYPES
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {sorted(PII_TYPES)}")

    @classmethod
    def from_config(cls, config: PiiConfig) -> PiiPolicy:
        return cls(config.mode, frozenset(config.redact))

    @property
    def active_types(self) -> frozenset[str]:
        return self.redact_types if self.mode == "redact" else frozenset()


@dataclass(frozen=True, slots=True)
class Redacted:
    """The text to store, what was replaced (offsets into ``text``) and the entities kept."""

    text: str
    redactions: tuple[Entity, ...]
    entities: tuple[Entity, ...]


def placeholder(entity_type: str) -> str:
    return f"[{entity_type.upper()}]"


def _check(text: str, entities: Sequence[Entity]) -> None:
    for e in entities:
        if not 0 <= e.start < e.end <= len(text) or text[e.start : e.end] != e.text:
            raise ValueError(f"entity {e.type} [{e.start}:{e.end}] does not match the text")


def _spans_to_redact(
    text: str, entities: Sequence[Entity], types: frozenset[str]
) -> list[tuple[int, int, str]]:
    """Merged, sorted spans: each detected value, and every other occurrence of that value."""
    spans = [(e.start, e.end, e.type) for e in entities if e.type in types]
    for value, kind in {(e.text, e.type) for e in entities if e.type in types}:
        at = text.find(value)
        while at != -1:
            spans.append((at, at + len(value), kind))
            at = text.find(value, at + 1)
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            prev_start, prev_end, prev_kind = merged[-1]
            merged[-1] = (prev_start, max(prev_end, end), prev_kind)
        else:
            merged.append((start, end, kind))
    return merged


def redact(text: str, entities: Sequence[Entity], policy: PiiPolicy) -> Redacted:
    """Replace the policy's PII spans by ``[TYPE]`` placeholders.

    Entities that overlap a redacted span are dropped (they would carry part of the value);
    the others are returned with offsets into the redacted text.
    """
    _check(text, entities)
    if not policy.active_types:
        return Redacted(text, (), tuple(sorted(entities, key=lambda e: e.start)))
    spans = _spans_to_redact(text, entities, policy.active_types)
    pieces: list[str] = []
    redactions: list[Entity] = []
    old_ends: list[int] = []  # original end of each redacted span
    shifts: list[int] = []  # cumulative length change after each redacted span
    cursor, out_len, shift = 0, 0, 0
    for start, end, kind in spans:
        pieces.append(text[cursor:start])
        out_len += start - cursor
        mark = placeholder(kind)
        redactions.append(Entity(mark, kind, out_len, out_len + len(mark)))
        pieces.append(mark)
        out_len += len(mark)
        shift += len(mark) - (end - start)
        old_ends.append(end)
        shifts.append(shift)
        cursor = end
    pieces.append(text[cursor:])
    redacted_text = "".join(pieces)

    kept: list[Entity] = []
    for e in entities:
        if e.type in policy.active_types or _overlaps(spans, e.start, e.end):
            continue
        i = bisect_right(old_ends, e.start)
        delta = shifts[i - 1] if i else 0
        kept.append(Entity(e.text, e.type, e.start + delta, e.end + delta))
    kept.sort(key=lambda e: e.start)
    return Redacted(redacted_text, tuple(redactions), tuple(kept))


def _overlaps(spans: Sequence[tuple[int, int, str]], start: int, end: int) -> bool:
    """Whether [start, end) meets one of ``spans`` (sorted, non-overlapping)."""
    i = bisect_right([s[0] for s in spans], start)
    return (i > 0 and spans[i - 1][1] > start) or (i < len(spans) and spans[i][0] < end)
