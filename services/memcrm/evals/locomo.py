"""LoCoMo conversations as memcrm interactions, and their questions with normalised evidence.

LoCoMo (Maharana et al., ACL 2024) files hold ``speaker_a``/``speaker_b``, sessions
``session_N`` (lists of turns with ``speaker``, ``dia_id`` ``"D<session>:<turn>"``, ``text`` and an
optional ``blip_caption`` for a shared photo), each session's start ``session_N_date_time``
(e.g. ``"9:05 am on 3 June, 2021"``) and ``qa``: questions whose ``evidence`` lists the ``dia_id``
of the turns that answer them.

Everything here is pure: no I/O beyond reading the JSON files, no network, no models.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CATEGORIES: dict[int, str] = {
    1: "multi_hop",
    2: "temporal",
    3: "open_domain",
    4: "single_hop",
    5: "adversarial",
}
# Adversarial questions ask about things that never happened: there is no evidence to recall.
SKIPPED_CATEGORIES = frozenset({5})

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        )
    )
}
_MONTHS.update({name[:3]: number for name, number in list(_MONTHS.items())})
_DATE_TIME = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*([ap])\.?\s*m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+)\.?,?\s+(\d{4})\s*$",
    re.IGNORECASE,
)
_SESSION = re.compile(r"^session_(\d+)$")
_DIA_ID = re.compile(r"^D\s*:?\s*(\d+)\s*:\s*(\d+)$", re.IGNORECASE)


def parse_session_datetime(value: str) -> datetime:
    """``"3:41 pm on 6 May, 2022"`` -> 2022-05-06 15:41 UTC (the data carries no time zone).

    12-hour clock: ``12:09 am`` is 00:09 and ``12:30 pm`` is 12:30. Full or three-letter
    English month names, any case. Anything else raises ValueError naming the value.
    """
    m = _DATE_TIME.match(value)
    if m is None:
        raise ValueError(f"unrecognised session date {value!r}")
    hour, minute, half, day, month_name, year = m.groups()
    month = _MONTHS.get(month_name.lower())
    h = int(hour)
    if month is None or not 1 <= h <= 12:
        raise ValueError(f"unrecognised session date {value!r}")
    h = h % 12 + (12 if half.lower() == "p" else 0)
    try:
        return datetime(int(year), month, int(day), h, int(minute), tzinfo=UTC)
    except ValueError:
        raise ValueError(f"impossible session date {value!r}") from None


def format_turn_text(speaker: str, text: str, blip_caption: str | None = None) -> str:
    """``"<speaker>: <text>"``, plus ``" [shares a photo: <caption>]"`` when a photo was shared."""
    body = f"{speaker}: {text.strip()}"
    caption = (blip_caption or "").strip()
    if caption:
        body = f"{body} [shares a photo: {caption}]"
    return body


def canonical_dia_id(piece: str) -> str | None:
    """``"D2:4"`` as is; unambiguous variants (``"D:7:12"``, ``"d 3 : 07"``) rewritten to
    ``"D<session>:<turn>"`` with plain integers; None for anything else."""
    m = _DIA_ID.match(piece.strip())
    if m is None:
        return None
    return f"D{int(m.group(1))}:{int(m.group(2))}"


# Outcomes of one evidence reference, as reported.
EXACT = "exact"  # already canonical and names a turn
NORMALISED = "normalised"  # rewritten (split or reformatted) and then names a turn
NO_SUCH_TURN = "no_such_turn"  # a well-formed id that names no turn of the conversation
MALFORMED = "malformed"  # not an id at all


@dataclass(frozen=True)
class EvidenceRef:
    """One reference as written in the data and what it resolved to."""

    raw: str
    canonical: str | None
    outcome: str


@dataclass(frozen=True)
class Evidence:
    refs: tuple[EvidenceRef, ...]

    @property
    def turn_ids(self) -> tuple[str, ...]:
        """The distinct turns the evidence names, in the order first named."""
        seen: dict[str, None] = {}
        for ref in self.refs:
            if ref.outcome in (EXACT, NORMALISED) and ref.canonical is not None:
                seen.setdefault(ref.canonical, None)
        return tuple(seen)

    @property
    def unresolved(self) -> tuple[EvidenceRef, ...]:
        return tuple(r for r in self.refs if r.outcome in (NO_SUCH_TURN, MALFORMED))


def normalise_evidence(entries: Sequence[object], known: Collection[str]) -> Evidence:
    """Resolve a question's ``evidence`` list against the conversation's ``dia_id`` set.

    An entry may hold several ids separated by ``;`` or ``,`` (``"D2:4; D3:1"``) or by
    whitespace when every part is an id; each id is made canonical (``canonical_dia_id``). An
    id whose turn does not exist (``NO_SUCH_TURN``) or text that is no id (``MALFORMED``) is
    kept as a reference with that outcome, never guessed at and never silently dropped.
    """
    refs: list[EvidenceRef] = []

    def resolve(raw: str, piece: str, split: bool) -> EvidenceRef:
        canonical = canonical_dia_id(piece)
        if canonical is None:
            return EvidenceRef(raw, None, MALFORMED)
        if canonical not in known:
            return EvidenceRef(raw, canonical, NO_SUCH_TURN)
        exact = not split and raw == canonical
        return EvidenceRef(raw, canonical, EXACT if exact else NORMALISED)

    for entry in entries:
        raw = entry if isinstance(entry, str) else json.dumps(entry)
        pieces = [p.strip() for p in re.split(r"[;,]", raw) if p.strip()]
        if not pieces:
            refs.append(EvidenceRef(raw, None, MALFORMED))
            continue
        split = len(pieces) > 1
        for piece in pieces:
            words = piece.split()
            several = len(words) > 1 and all(canonical_dia_id(w) is not None for w in words)
            if canonical_dia_id(piece) is None and several:
                refs.extend(resolve(raw, w, True) for w in words)
                continue
            refs.append(resolve(raw, piece, split))
    return Evidence(tuple(refs))


@dataclass(frozen=True)
class Turn:
    dia_id: str
    session: int
    # Position within its session, from 0.
    index: int
    speaker: str
    occurred_at: datetime
    # As indexed by memcrm and by the baselines (``format_turn_text``).
    text: str
    has_photo: bool


@dataclass(frozen=True)
class Question:
    # Position in the file's ``qa`` list.
    index: int
    question: str
    category: int
    evidence: Evidence

    @property
    def category_name(self) -> str:
        return CATEGORIES.get(self.category, f"category_{self.category}")

    @property
    def evaluated(self) -> bool:
        """Asked in the benchmark (every category but the adversarial one)."""
        return self.category not in SKIPPED_CATEGORIES

    @property
    def scorable(self) -> bool:
        """Evaluated and naming at least one existing turn (recall@k needs a denominator)."""
        return self.evaluated and bool(self.evidence.turn_ids)


@dataclass(frozen=True)
class Conversation:
    name: str
    speakers: tuple[str, str]
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]
    # ``session_N_date_time`` keys whose ``session_N`` has no turns (LoCoMo ships a few).
    dated_sessions_without_turns: int

    @property
    def sessions(self) -> int:
        return len({t.session for t in self.turns})

    def sessions_out_of_order(self) -> int:
        """Sessions that start before the session numbered just before them."""
        starts: dict[int, datetime] = {}
        for t in self.turns:
            starts.setdefault(t.session, t.occurred_at)
        ordered = [starts[s] for s in sorted(starts)]
        return sum(1 for a, b in itertools.pairwise(ordered) if b < a)


def load_conversation(name: str, data: Mapping[str, Any]) -> Conversation:
    """One LoCoMo conversation. Turn ``i`` (from 0) of a session occurs ``i`` seconds after the
    session's start, so the turns keep their order within the session.

    Raises ValueError for what cannot be read honestly: a session without a parseable date, a
    turn without ``dia_id``/``speaker``, or a ``dia_id`` used twice.
    """
    numbers = sorted(
        int(m.group(1))
        for key, value in data.items()
        if (m := _SESSION.match(key)) and isinstance(value, list)
    )
    turns: list[Turn] = []
    seen: set[str] = set()
    for n in numbers:
        stamp = data.get(f"session_{n}_date_time")
        if not isinstance(stamp, str):
            raise ValueError(f"{name}: session_{n} has no session_{n}_date_time")
        try:
            start = parse_session_datetime(stamp)
        except ValueError as exc:
            raise ValueError(f"{name}: session_{n}: {exc}") from None
        for i, raw in enumerate(data[f"session_{n}"]):
            dia_id, speaker = raw.get("dia_id"), raw.get("speaker")
            if not isinstance(dia_id, str) or not isinstance(speaker, str):
                raise ValueError(f"{name}: session_{n} turn {i} lacks dia_id or speaker")
            if dia_id in seen:
                raise ValueError(f"{name}: dia_id {dia_id!r} appears twice")
            seen.add(dia_id)
            caption = raw.get("blip_caption")
            caption = caption if isinstance(caption, str) else None
            turns.append(
                Turn(
                    dia_id=dia_id,
                    session=n,
                    index=i,
                    speaker=speaker,
                    occurred_at=start + timedelta(seconds=i),
                    text=format_turn_text(speaker, str(raw.get("text", "")), caption),
                    has_photo=bool(caption and caption.strip()),
                )
            )
    with_turns = set(numbers)
    dated_without = sum(
        1
        for key in data
        if (m := re.match(r"^session_(\d+)_date_time$", key)) and int(m.group(1)) not in with_turns
    )
    questions = tuple(
        Question(
            index=i,
            question=str(qa.get("question", "")),
            category=int(qa.get("category", 0)),
            evidence=normalise_evidence(list(qa.get("evidence") or []), seen),
        )
        for i, qa in enumerate(data.get("qa") or [])
    )
    speakers = (str(data.get("speaker_a", "")), str(data.get("speaker_b", "")))
    return Conversation(name, speakers, tuple(turns), questions, dated_without)


def _sort_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def load_conversations(directory: Path) -> list[Conversation]:
    """Every ``*.json`` conversation in ``directory``, numeric names in numeric order."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no LoCoMo folder at {directory}")
    paths = sorted(directory.glob("*.json"), key=_sort_key)
    if not paths:
        raise FileNotFoundError(f"no LoCoMo conversations (*.json) in {directory}")
    return [load_conversation(p.stem, json.loads(p.read_text())) for p in paths]


@dataclass(frozen=True)
class InteractionRecord:
    """One turn as a memcrm interaction, ready to be put on the wire."""

    interaction_id: str
    customer_id: str
    occurred_at: datetime
    text: str
    attributes: dict[str, str]
    dia_id: str


def interaction_records(conversation: Conversation, customer_id: str) -> list[InteractionRecord]:
    """The conversation's turns as interactions of one customer.

    memcrm's ``interaction_id`` is the idempotency key of the whole tenant, and every LoCoMo
    conversation reuses ``D1:1``, ``D1:2``...: the id is therefore ``<customer_id>/<dia_id>``;
    the bare ``dia_id`` travels in ``attributes["dia_id"]`` and the speaker in
    ``attributes["speaker"]``.
    """
    return [
        InteractionRecord(
            interaction_id=f"{customer_id}/{t.dia_id}",
            customer_id=customer_id,
            occurred_at=t.occurred_at,
            text=t.text,
            attributes={"speaker": t.speaker, "dia_id": t.dia_id},
            dia_id=t.dia_id,
        )
        for t in conversation.turns
    ]
