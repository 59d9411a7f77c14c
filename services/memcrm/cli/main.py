"""``memcrm``: try the memcrm service from a shell."""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from memcrm.cli.client import DEFAULT_API_KEY, MemcrmClient, default_address
from memcrm.cli.readers import (
    BadRow,
    ChannelName,
    Condition,
    DirectionName,
    Format,
    Parsed,
    Preset,
    ReadOptions,
    ReadResult,
    RowError,
    SourceError,
    channel_value,
    check_id,
    days_to_now,
    detect_format,
    direction_value,
    parse_time,
    read_stream,
    timestamp,
)
from memcrm.cli.render import (
    IngestProgress,
    IngestTally,
    render_ingest,
    render_nba,
    render_recall,
    render_signal,
    render_summary,
    render_timeline,
)
from memcrm.core.types import SIGNAL_NAMES
from memcrm.v1 import common_pb2, memory_pb2

MAX_BATCH = 500
MAX_BATCH_BYTES = 3 * 1024 * 1024  # below gRPC's default 4 MiB a server accepts
EXIT_RPC_ERROR = 1
EXIT_ROWS_FAILED = 3
EXIT_INTERRUPTED = 130
HINTS = {
    "UNAVAILABLE": "is memcrm running at {address}? Start it with `memcrm serve`.",
    "UNAUTHENTICATED": "check --api-key or MEMCRM_API_KEY.",
    "PERMISSION_DENIED": "the API key lacks the role this call needs.",
    "DEADLINE_EXCEEDED": "the server did not answer in time; raise --timeout.",
}
CONNECTION = "Connection and output"

app = typer.Typer(
    name="memcrm",
    help="Memory-driven CRM: ingest interactions, recall memories, get next best actions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Options every client command takes ---------------------------------------------------------

AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="MEMCRM_ADDRESS",
        show_default=False,
        rich_help_panel=CONNECTION,
        help="host:port of memcrm's gRPC endpoint "
        "(default: $MEMCRM_GRPC_HOST:$MEMCRM_GRPC_PORT, else 127.0.0.1:50051)",
    ),
]
ApiKeyOption = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="MEMCRM_API_KEY",
        show_default=False,
        rich_help_panel=CONNECTION,
        help=f"API key, sent as 'authorization: Bearer KEY' (default: {DEFAULT_API_KEY})",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", rich_help_panel=CONNECTION, help="Print raw responses as JSON."),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        envvar="MEMCRM_TIMEOUT",
        min=0.001,
        rich_help_panel=CONNECTION,
        help="Deadline of each call, in seconds.",
    ),
]
ChannelOption = Annotated[ChannelName | None, typer.Option("--channel", case_sensitive=False)]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", metavar="ISO8601", help="Only what had been recorded by then."),
]


@dataclass(frozen=True, slots=True)
class Connection:
    address: str | None
    api_key: str
    timeout: float

    @property
    def target(self) -> str:
        return self.address or default_address()


@contextmanager
def connected(connection: Connection) -> Iterator[MemcrmClient]:
    """A client; a server error ends the command with ``error: CODE: details`` on stderr."""
    try:
        with MemcrmClient.connect(
            connection.target, connection.api_key, connection.timeout
        ) as client:
            yield client
    except grpc.RpcError as error:
        fail_rpc(error, connection.target)


def fail_rpc(error: grpc.RpcError, address: str) -> NoReturn:
    if isinstance(error, grpc.Call):
        code, details = error.code(), error.details()
        name = code.name if code is not None else "UNKNOWN"
    else:
        name, details = "UNKNOWN", str(error)
    typer.echo(f"error: {name}: {details or '(no details)'}", err=True)
    if name in HINTS:
        typer.echo(f"hint: {HINTS[name].format(address=address)}", err=True)
    raise typer.Exit(EXIT_RPC_ERROR)


def to_json(message: Message, *, compact: bool = False) -> str:
    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        ensure_ascii=False,
        indent=None if compact else 2,
    )


def time_option(value: str | None, hint: str) -> Timestamp | None:
    if value is None:
        return None
    try:
        return timestamp(parse_time(value, hint))
    except RowError as error:
        raise typer.BadParameter(str(error).removeprefix(f"{hint}: "), param_hint=hint) from None


def stdout() -> Console:
    return Console(highlight=False)


# ingest -------------------------------------------------------------------------------------


@app.command()
def ingest(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSONL or CSV file of interactions.",
        ),
    ] = None,
    fmt: Annotated[
        Format | None, typer.Option("--format", help="File format (default: by suffix).")
    ] = None,
    preset: Annotated[
        Preset | None, typer.Option("--preset", help="Column mapping of a known data set.")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", metavar="COLUMN=VALUE", help="Only rows whose column equals it."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Read at most N selected rows.")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH, help="Interactions per IngestBatch call.")
    ] = MAX_BATCH,
    text: Annotated[str | None, typer.Option("--text", help="Ingest one interaction.")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="With --text.")] = None,
    interaction_id: Annotated[
        str | None, typer.Option("--id", help="With --text (default: a new cli-<uuid>).")
    ] = None,
    channel: Annotated[
        ChannelName | None,
        typer.Option(
            case_sensitive=False, help="With --text (default chat); for FILE, rows naming none."
        ),
    ] = None,
    direction: Annotated[
        DirectionName | None,
        typer.Option(
            case_sensitive=False, help="With --text (default inbound); for FILE, rows naming none."
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", metavar="ISO8601", help="With --text (default: now).")
    ] = None,
    shift_to_now: Annotated[
        bool,
        typer.Option(
            "--shift-to-now",
            help=(
                "Replay a historical FILE as recent history: move every occurred_at by the whole "
                "days that put the newest row at yesterday (recorded in the attribute "
                "replay.shift_days)."
            ),
        ),
    ] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = DEFAULT_API_KEY,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Store interactions: each row of FILE, or one interaction given with --text.

    Exits 3 when some rows were not stored, 1 on a server error.
    """
    connection = Connection(address, api_key, timeout)
    if text is None:
        if file is None:
            raise typer.BadParameter("give a FILE, or --text with --customer", param_hint="FILE")
        for name, value in (("--customer", customer), ("--id", interaction_id), ("--at", at)):
            if value is not None:
                raise typer.BadParameter("only applies with --text", param_hint=name)
        try:
            conditions = [Condition.parse(item) for item in where or ()]
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--where") from None
        options = ReadOptions(preset, conditions, limit, channel, direction)
        ingest_file(connection, file, fmt, options, batch_size, as_json, shift_to_now)
        return
    if file is not None or fmt or preset or where or limit or shift_to_now:
        raise typer.BadParameter(
            "--text ingests one interaction; FILE, --format, --preset, --where, --limit and "
            "--shift-to-now only apply to files",
            param_hint="--text",
        )
    try:
        interaction = common_pb2.Interaction(
            interaction_id=check_id("--id", interaction_id or f"cli-{uuid.uuid4().hex}"),
            customer_id=check_id("--customer", customer or ""),
            channel=channel_value(channel or ChannelName.CHAT),
            direction=direction_value(direction or DirectionName.INBOUND),
            occurred_at=time_option(at, "--at") or timestamp(datetime.now(UTC)),
            text=text,
        )
    except RowError as error:
        raise typer.BadParameter(str(error)) from None
    with connected(connection) as client:
        response = client.ingest(interaction)
    if as_json:
        typer.echo(to_json(response))
    else:
        render_ingest(stdout(), response)


def batches(results: Iterable[ReadResult], size: int, tally: IngestTally) -> Iterator[list[Parsed]]:
    """Good rows in batches of at most size rows and MAX_BATCH_BYTES; bad rows go to tally."""
    batch: list[Parsed] = []
    batch_bytes = 0
    for result in results:
        tally.read += 1
        if isinstance(result, BadRow):
            tally.error(f"line {result.line}: {result.error}")
            continue
        item_bytes = result.interaction.ByteSize()
        if batch and batch_bytes + item_bytes > MAX_BATCH_BYTES:
            yield batch
            batch, batch_bytes = [], 0
        batch.append(result)
        batch_bytes += item_bytes
        if len(batch) >= size:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


def ingest_file(
    connection: Connection,
    path: Path,
    fmt: Format | None,
    options: ReadOptions,
    batch_size: int,
    as_json: bool,
    shift_to_now: bool = False,
) -> None:
    try:
        source_format = detect_format(path, fmt, options.preset)
        if shift_to_now:
            with path.open("rb") as first_pass:
                days = days_to_now(first_pass, source_format, options, datetime.now(UTC).date())
            options = replace(options, shift_days=days)
    except SourceError as error:
        raise typer.BadParameter(str(error), param_hint="FILE") from None
    errors = Console(stderr=True, highlight=False)
    tally = IngestTally()
    summary = errors if as_json else stdout()
    with path.open("rb") as stream, connected(connection) as client:
        progress = IngestProgress(errors, path.stat().st_size)
        try:
            for batch in batches(read_stream(stream, source_format, options), batch_size, tally):
                try:
                    response = client.ingest_batch([item.interaction for item in batch])
                except grpc.RpcError:
                    tally.unconfirmed += len(batch)
                    raise
                tally.batches += 1
                tally.add_results(response.results, [item.line for item in batch])
                tally.unconfirmed += max(0, len(batch) - len(response.results))
                if as_json:
                    typer.echo(to_json(response, compact=True))
                progress.update(stream.tell(), tally)
        except SourceError as error:
            progress.close()
            typer.echo(f"error: {path}: {error}", err=True)
            raise typer.Exit(2) from None
        except grpc.RpcError:
            progress.close()
            render_summary(summary, path.name, tally)
            raise
        except KeyboardInterrupt:
            progress.close()
            render_summary(summary, path.name, tally)
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        progress.close()
    render_summary(summary, path.name, tally)
    if tally.errors or tally.unconfirmed:
        raise typer.Exit(EXIT_ROWS_FAILED)


# recall, timeline, nba ----------------------------------------------------------------------


@app.command()
def recall(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="Customer id.")],
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="What to recall (default: most important).")
    ] = "",
    top_k: Annotated[int, typer.Option(min=1, max=100, help="How many memories.")] = 10,
    channel: Annotated[
        list[ChannelName] | None,
        typer.Option(case_sensitive=False, help="Only this channel (repeatable)."),
    ] = None,
    as_of: AsOfOption = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = DEFAULT_API_KEY,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30.0,
) -> None:
    """The customer's memories that matter for QUERY, best first."""
    channels = [channel_value(name) for name in channel or ()]
    stamp = time_option(as_of, "--as-of")
    with connected(Connection(address, api_key, timeout)) as client:
        response = client.recall(customer, query, top_k=top_k, channels=channels, as_of=stamp)
    if as_json:
        typer.echo(to_json(response))
    else:
        render_recall(stdout(), response)


@app.command()
def timeline(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="Customer id.")],
    page_size: Annotated[int, typer.Option(min=1, max=500, help="Memories per page.")] = 50,
    page_token: Annotated[str, typer.Option(help="Start at this page.")] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every next page.")] = False,
    as_of: AsOfOption = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = DEFAULT_API_KEY,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30.0,
) -> None:
    """The customer's memories, oldest first (with --json and --all: one page per line)."""
    stamp = time_option(as_of, "--as-of")
    memories: list[common_pb2.Memory] = []
    last = memory_pb2.GetTimelineResponse()
    with connected(Connection(address, api_key, timeout)) as client:
        if all_pages:
            pages = client.timeline_pages(
                customer, page_size=page_size, page_token=page_token, as_of=stamp
            )
        else:
            pages = iter(
                [client.timeline(customer, page_size=page_size, page_token=page_token, as_of=stamp)]
            )
        for last in pages:
            if as_json:
                typer.echo(to_json(last, compact=all_pages))
            else:
                memories.extend(last.memories)
    if as_json:
        return
    render_timeline(stdout(), memories)
    if last.next_page_token and not all_pages:
        typer.echo(f"more: --all, or --page-token {last.next_page_token}", err=True)


@app.command()
def nba(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="Customer id.")],
    context: Annotated[str, typer.Option(help="What is happening now.")] = "",
    channel: ChannelOption = None,
    top_n: Annotated[int, typer.Option(min=1, help="How many actions.")] = 3,
    as_of: AsOfOption = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = DEFAULT_API_KEY,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """The next best actions for the customer, each with its SHAP explanation."""
    stamp = time_option(as_of, "--as-of")
    with connected(Connection(address, api_key, timeout)) as client:
        response = client.next_best_action(
            customer,
            context=context,
            channel=channel_value(channel) if channel else common_pb2.CHANNEL_UNSPECIFIED,
            top_n=top_n,
            as_of=stamp,
        )
    if as_json:
        typer.echo(to_json(response))
    else:
        render_nba(stdout(), response)


SIGNAL_CHOICES = ", ".join(SIGNAL_NAMES)


@app.command()
def watch(
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="Only this prediction (repeatable): " + ", ".join(SIGNAL_NAMES)
        ),
    ] = None,
    customer: Annotated[
        list[str] | None, typer.Option("--customer", help="Only this customer (repeatable).")
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            metavar="EVENT_ID",
            help="Resume after this event id (default: from now; '<unix ms>-0' is a moment).",
        ),
    ] = None,
    rising_only: Annotated[bool, typer.Option(help="Only predictions that rose.")] = False,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many events (default: never).")
    ] = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = DEFAULT_API_KEY,
    as_json: JsonOption = False,
) -> None:
    """Proactive signals as they happen: a customer's prediction crossed its threshold after
    an ingestion (one line, or one JSON object, per event; Ctrl-C stops)."""
    cursor = after if after is not None else f"{time.time_ns() // 1_000_000}-0"
    console = stdout()
    seen = 0
    # Unary calls' deadline; the stream itself has none (the client reconnects).
    with connected(Connection(address, api_key, 30.0)) as client:
        events = client.watch_signals(
            after=cursor, names=name or (), customer_ids=customer or (), rising_only=rising_only
        )
        try:
            for event in events:
                if as_json:
                    typer.echo(to_json(event, compact=True))
                else:
                    render_signal(console, event)
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


@app.command()
def serve() -> None:
    """Start the memcrm service in the foreground; Ctrl-C stops it."""
    try:
        run = importlib.import_module("memcrm.services.run")
    except ModuleNotFoundError as error:
        if error.name != "memcrm.services.run":
            raise
        typer.echo("error: this installation has no memcrm.services.run", err=True)
        raise typer.Exit(EXIT_RPC_ERROR) from None
    run.main()
