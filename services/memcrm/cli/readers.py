"""Read interactions from JSONL and CSV files into ``memcrm.v1.Interaction`` messages.

Readers stream: they take a binary file, yield one result per selected record, either a
``Parsed`` interaction or a ``BadRow`` naming the line the record starts on, and never raise for
a bad record. Problems with the file as a whole (a missing column) raise ``SourceError``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.v1 import common_pb2

ID_CHARSET = "[A-Za-z0-9._:@/-]"
MAX_ID_CHARS = 128
_ID = re.compile(f"{ID_CHARSET}{{1,{MAX_ID_CHARS}}}")
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9._:@/-]")
_BOM = b"\xef\xbb\xbf"

FIELDS = frozenset(
    {
        "interaction_id",
        "customer_id",
        "channel",
        "direction",
        "occurred_at",
        "text",
        "subject",
        "actor_id",
        "thread_id",
        "attributes",
    }
)

Record = Mapping[str, object]


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class Preset(StrEnum):
    AIRLINE_TWEETS = "airline-tweets"


class ChannelName(StrEnum):
    EMAIL = "email"
    CHAT = "chat"
    VOICE = "voice"
    SMS = "sms"
    SOCIAL = "social"
    MEETING = "meeting"
    TICKET = "ticket"
    WEB = "web"
    PURCHASE = "purchase"


class DirectionName(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class RowError(ValueError):
    """One record cannot become an Interaction."""


class SourceError(Exception):
    """The file as a whole cannot be read as asked."""


@dataclass(frozen=True, slots=True)
class Parsed:
    line: int
    interaction: common_pb2.Interaction


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    error: str


ReadResult = Parsed | BadRow


@dataclass(frozen=True, slots=True)
class Condition:
    """``--where column=value``: the record's column (or attribute) equals value exactly."""

    column: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        column, sep, value = text.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"expected COLUMN=VALUE, got {text!r}")
        return cls(column.strip(), value)

    def matches(self, record: Record) -> bool:
        value = record.get(self.column)
        attributes = record.get("attributes")
        if value is None and isinstance(attributes, Mapping):
            value = attributes.get(self.column)
        return value is not None and _scalar(value) == self.value


@dataclass(frozen=True, slots=True)
class ReadOptions:
    preset: Preset | None = None
    where: Sequence[Condition] = ()
    limit: int | None = None
    channel: ChannelName | None = None
    """The channel of records that name none."""
    direction: DirectionName | None = None
    """The direction of records that name none."""
    shift_days: int = 0
    """Added to every occurred_at, to replay a historical data set as recent history."""


# Values ------------------------------------------------------------------------------------


def channel_value(name: str) -> common_pb2.Channel.ValueType:
    """``social``, ``SOCIAL`` or ``CHANNEL_SOCIAL`` to the enum value."""
    key = name.strip().upper().removeprefix("CHANNEL_")
    if key in ChannelName.__members__:
        return common_pb2.Channel.Value(f"CHANNEL_{key}")
    raise RowError(f"channel: unknown channel {name!r} (one of {', '.join(ChannelName)})")


def direction_value(name: str) -> common_pb2.Direction.ValueType:
    key = name.strip().upper().removeprefix("DIRECTION_")
    if key in DirectionName.__members__:
        return common_pb2.Direction.Value(f"DIRECTION_{key}")
    raise RowError(f"direction: unknown direction {name!r} (inbound or outbound)")


def parse_time(text: str, field: str = "occurred_at") -> datetime:
    """An ISO 8601 date-time with a zone (``Z``, ``+01:00``, ``-0800``)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RowError(f"{field}: not an ISO 8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise RowError(f"{field}: {text!r} has no time zone (e.g. 2024-05-01T10:00:00+02:00)")
    return moment


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def check_id(field: str, value: str) -> str:
    if not value:
        raise RowError(f"{field}: is required")
    if not _ID.fullmatch(value):
        raise RowError(f"{field}: {value[:40]!r} is not 1-{MAX_ID_CHARS} chars of {ID_CHARSET}")
    return value


def sanitize_id(value: str, field: str = "customer_id") -> str:
    """Replace every character outside the id charset by ``_`` and cut to 128 characters."""
    cleaned = _NOT_ID_CHAR.sub("_", value.strip())[:MAX_ID_CHARS]
    if not cleaned:
        raise RowError(f"{field}: is empty")
    return cleaned


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(record: Record, field: str) -> str:
    value = record.get(field)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"{field}: expected a string, got {type(value).__name__}")


# Mapping records to interactions -----------------------------------------------------------


def _attributes(record: Record) -> dict[str, str]:
    """Unknown keys (extra CSV columns) first, then the ``attributes`` object, which wins."""
    result = {
        key: _scalar(value)
        for key, value in record.items()
        if key not in FIELDS and key and value not in (None, "")
    }
    explicit = record.get("attributes")
    if isinstance(explicit, str) and explicit.strip():
        try:
            explicit = json.loads(explicit)
        except json.JSONDecodeError:
            raise RowError("attributes: not a JSON object") from None
    if explicit in (None, ""):
        return result
    if not isinstance(explicit, Mapping):
        raise RowError("attributes: expected an object of strings")
    result.update({str(key): _scalar(value) for key, value in explicit.items()})
    return result


def interaction_from_record(record: Record, options: ReadOptions) -> common_pb2.Interaction:
    """A record with the Interaction field names; keys it does not know go into attributes."""
    interaction_id = check_id("interaction_id", _text(record, "interaction_id").strip())
    customer_id = check_id("customer_id", _text(record, "customer_id").strip())
    channel = _text(record, "channel") or (options.channel or "")
    if not channel:
        raise RowError("channel: is required")
    direction = _text(record, "direction") or (options.direction or "")
    occurred_at = _text(record, "occurred_at")
    if not occurred_at:
        raise RowError("occurred_at: is required")
    return common_pb2.Interaction(
        interaction_id=interaction_id,
        customer_id=customer_id,
        channel=channel_value(channel),
        direction=direction_value(direction) if direction else common_pb2.DIRECTION_UNSPECIFIED,
        occurred_at=timestamp(parse_time(occurred_at)),
        text=_text(record, "text"),
        subject=_text(record, "subject"),
        actor_id=_text(record, "actor_id").strip(),
        thread_id=_text(record, "thread_id").strip(),
        attributes=_attributes(record),
    )


def airline_tweet(record: Record) -> common_pb2.Interaction:
    """A row of Twitter US Airline Sentiment's Tweets.csv."""
    tweet_id = _text(record, "tweet_id").strip()
    if not tweet_id:
        raise RowError("tweet_id: is empty")
    # The annotators' labels (airline_sentiment, negativereason) are not sent: memcrm must
    # understand the text itself, and the data set's repeated tweets disagree on them.
    airline = _text(record, "airline").strip()
    attributes = {"airline": airline} if airline else {}
    return common_pb2.Interaction(
        interaction_id=check_id("interaction_id", f"tweet-{tweet_id}"),
        customer_id=sanitize_id(_text(record, "name"), "name"),
        channel=common_pb2.CHANNEL_SOCIAL,
        direction=common_pb2.DIRECTION_INBOUND,
        occurred_at=timestamp(parse_time(_text(record, "tweet_created"), "tweet_created")),
        text=_text(record, "text"),
        attributes=attributes,
    )


Mapper = Callable[[Record], common_pb2.Interaction]

PRESET_COLUMNS: dict[Preset, frozenset[str]] = {
    Preset.AIRLINE_TWEETS: frozenset({"tweet_id", "name", "text", "tweet_created", "airline"}),
}
PRESET_MAPPERS: dict[Preset, Mapper] = {Preset.AIRLINE_TWEETS: airline_tweet}


def _mapper(options: ReadOptions) -> Mapper:
    if options.preset is not None:
        return PRESET_MAPPERS[options.preset]
    return lambda record: interaction_from_record(record, options)


# Streaming ---------------------------------------------------------------------------------


def detect_format(path: Path, override: Format | None, preset: Preset | None) -> Format:
    if override is not None:
        return override
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return Format.JSONL
    if suffix == ".csv" or preset is not None:
        return Format.CSV
    raise SourceError(f"cannot tell the format of {path.name} from its suffix: pass --format")


def read_stream(stream: BinaryIO, fmt: Format, options: ReadOptions) -> Iterator[ReadResult]:
    """Stream the interactions of a JSONL or CSV file opened in binary mode."""
    records = _jsonl_records(stream) if fmt is Format.JSONL else _csv_records(stream, options)
    return _select(records, options, _mapper(options))


REPLAY_ATTRIBUTE = "replay.shift_days"


def days_to_now(stream: BinaryIO, fmt: Format, options: ReadOptions, today: date) -> int:
    """Whole days that move the newest selected row to yesterday (a first pass over the file)."""
    newest: datetime | None = None
    for result in read_stream(stream, fmt, replace(options, shift_days=0)):
        if isinstance(result, Parsed):
            moment = result.interaction.occurred_at.ToDatetime(tzinfo=UTC)
            newest = moment if newest is None else max(newest, moment)
    if newest is None:
        return 0
    return max(0, (today - newest.date()).days - 1)


def _shifted(interaction: common_pb2.Interaction, days: int) -> common_pb2.Interaction:
    """The interaction moved ``days`` later, the shift recorded in its attributes."""
    if days == 0:
        return interaction
    moved = interaction.occurred_at.ToDatetime(tzinfo=UTC) + timedelta(days=days)
    interaction.occurred_at.CopyFrom(timestamp(moved))
    interaction.attributes[REPLAY_ATTRIBUTE] = str(days)
    return interaction


def _select(
    records: Iterable[tuple[int, Record | BadRow]], options: ReadOptions, mapper: Mapper
) -> Iterator[ReadResult]:
    remaining = options.limit
    if remaining is not None and remaining <= 0:
        return
    for line, record in records:
        if isinstance(record, BadRow):
            yield record
        elif all(condition.matches(record) for condition in options.where):
            try:
                yield Parsed(line, _shifted(mapper(record), options.shift_days))
            except RowError as error:
                yield BadRow(line, str(error))
            except ValueError as error:  # protobuf refusing a value, e.g. a date out of range
                yield BadRow(line, f"invalid value: {error}")
        else:
            continue
        if remaining is not None:
            remaining -= 1
            if remaining == 0:
                return


def _decoded_lines(stream: BinaryIO, bad_lines: set[int]) -> Iterator[str]:
    """The file's lines as text with their endings; undecodable lines are noted in bad_lines."""
    for number, raw in enumerate(stream, start=1):
        data = raw.removeprefix(_BOM) if number == 1 else raw
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield data.decode("utf-8", errors="replace")


def _jsonl_records(stream: BinaryIO) -> Iterator[tuple[int, Record | BadRow]]:
    bad_lines: set[int] = set()
    for number, line in enumerate(_decoded_lines(stream, bad_lines), start=1):
        if number in bad_lines:
            yield number, BadRow(number, "not valid UTF-8")
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, BadRow(number, f"invalid JSON: {error.msg} at column {error.colno}")
            continue
        if not isinstance(value, dict):
            yield number, BadRow(number, "expected a JSON object")
            continue
        yield number, value


def _check_columns(header: Sequence[str], options: ReadOptions) -> None:
    columns = set(header)
    if options.preset is None:
        required = {"interaction_id", "customer_id", "occurred_at"}
        if options.channel is None:
            required.add("channel")
        missing = required - columns
        if missing:
            raise SourceError(
                f"no column {', '.join(sorted(missing))}: name the columns after Interaction's "
                f"fields, or use --preset ({', '.join(Preset)})"
            )
    else:
        lacking = PRESET_COLUMNS[options.preset] - columns
        if lacking:
            raise SourceError(
                f"preset {options.preset} needs the columns {', '.join(sorted(lacking))}"
            )
    for condition in options.where:
        if condition.column not in columns:
            raise SourceError(
                f"--where: no column {condition.column!r} (columns: {', '.join(header)})"
            )


def _csv_records(stream: BinaryIO, options: ReadOptions) -> Iterator[tuple[int, Record | BadRow]]:
    bad_lines: set[int] = set()
    reader = csv.reader(_decoded_lines(stream, bad_lines))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as error:
        raise SourceError(f"line 1: unreadable CSV header: {error}") from None
    _check_columns(header, options)
    start = reader.line_num + 1
    while True:
        line = start
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            start = reader.line_num + 1
            yield line, BadRow(line, f"malformed CSV: {error}")
            continue
        start = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if any(number in bad_lines for number in range(line, start)):
            yield line, BadRow(line, "not valid UTF-8")
        elif len(row) != len(header):
            yield line, BadRow(line, f"expected {len(header)} columns, found {len(row)}")
        else:
            yield line, dict(zip(header, row, strict=True))
