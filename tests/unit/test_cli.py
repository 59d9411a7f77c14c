"""The memcrm command-line client: readers, renderer, and the CLI against an in-process server."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from typer.testing import CliRunner

from memcrm.cli.client import default_address
from memcrm.cli.main import app
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
    days_to_now,
    detect_format,
    read_stream,
    sanitize_id,
)
from memcrm.cli.render import IngestTally, render_nba, render_recall, render_summary, signed_bar
from memcrm.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    memory_pb2,
    recommendation_pb2,
    signals_pb2,
    signals_pb2_grpc,
)

S = TypeVar("S")

TWEETS_HEADER = (
    "tweet_id,airline_sentiment,airline_sentiment_confidence,negativereason,"
    "negativereason_confidence,airline,airline_sentiment_gold,name,negativereason_gold,"
    "retweet_count,text,tweet_coord,tweet_created,tweet_location,user_timezone\n"
)
TWEETS_ROWS = (
    "570306133677760513,neutral,1,,,Virgin America,,cairdin,,0,"
    "@VirginAmerica What @dhepburn said.,,2015-02-24 11:35:00 -0800,,Eastern Time (US & Canada)\n"
    "570301031407624196,negative,1,Bad Flight,0.7033,United,,Late Flightncy,,0,"
    '"@united it\'s really ""aggressive""\nto blast entertainment",,'
    "2015-02-24 11:15:00 -0800,,Pacific Time (US & Canada)\n"
    "570301083672813571,positive,0.6837,,,United,,yvonnalynn,,0,"
    "@united thanks!,,2015-02-24 11:15:00 -0800,Lets Play,Central Time (US & Canada)\n"
    "570300000000000001,negative,1,Late Flight,1,United,,,,0,"
    "@united nobody,,2015-02-24 11:10:00 -0800,,\n"
    "570300000000000002,negative,1,Late Flight,1,Delta,,frank,,0,"
    "@delta late,,2015-02-24 11:05:00 -0800,,\n"
)


def read(data: bytes, fmt: Format, options: ReadOptions | None = None) -> list[ReadResult]:
    return list(read_stream(io.BytesIO(data), fmt, options or ReadOptions()))


def good(results: list[ReadResult]) -> list[Parsed]:
    return [result for result in results if isinstance(result, Parsed)]


def bad(results: list[ReadResult]) -> list[BadRow]:
    return [result for result in results if isinstance(result, BadRow)]


# Readers -------------------------------------------------------------------------------------


def test_jsonl_reads_fields_and_reports_bad_lines_by_number() -> None:
    rows = [
        {
            "interaction_id": "i-1",
            "customer_id": "c-1",
            "channel": "email",
            "direction": "outbound",
            "occurred_at": "2024-05-01T10:00:00+02:00",
            "text": "Your order shipped",
            "subject": "Order 42",
            "actor_id": "rep-7",
            "thread_id": "t-1",
            "attributes": {"consent.marketing": False, "order": 42},
            "source": "crm-export",
        },
        {"interaction_id": "i-2", "customer_id": "c 2", "channel": "chat", "occurred_at": "x"},
        {"interaction_id": "i-3", "customer_id": "c-3", "channel": "fax", "occurred_at": "x"},
        {
            "interaction_id": "i-4",
            "customer_id": "c-4",
            "channel": "CHANNEL_SMS",
            "occurred_at": "2024-05-01T10:00:00",
        },
        {
            "interaction_id": 5,
            "customer_id": "c-5",
            "channel": "sms",
            "occurred_at": "2024-05-01T09:30Z",
        },
    ]
    lines = [json.dumps(row) for row in rows]
    data = "\n".join([lines[0], "", "{not json", lines[1], lines[2], "[1]", lines[3], lines[4]])
    results = read(data.encode() + b"\n\xff\xfe\n", Format.JSONL)

    first, last = good(results)
    assert first.line == 1
    interaction = first.interaction
    assert interaction.channel == common_pb2.CHANNEL_EMAIL
    assert interaction.direction == common_pb2.DIRECTION_OUTBOUND
    assert interaction.occurred_at.ToDatetime(tzinfo=UTC) == datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert (interaction.subject, interaction.actor_id, interaction.thread_id) == (
        "Order 42",
        "rep-7",
        "t-1",
    )
    assert dict(interaction.attributes) == {
        "consent.marketing": "false",
        "order": "42",
        "source": "crm-export",
    }
    assert (last.line, last.interaction.interaction_id) == (8, "5")

    errors = {row.line: row.error for row in bad(results)}
    assert sorted(errors) == [3, 4, 5, 6, 7, 9]
    assert "invalid JSON" in errors[3]
    assert errors[4].startswith("customer_id:")
    assert "unknown channel 'fax'" in errors[5]
    assert errors[6] == "expected a JSON object"
    assert "no time zone" in errors[7]
    assert errors[9] == "not valid UTF-8"


def test_csv_maps_columns_and_puts_extra_columns_into_attributes() -> None:
    data = (
        "\ufeffinteraction_id,customer_id,channel,occurred_at,text,region,empty\n"
        'i-1,c-1,voice,2024-05-01T10:00:00Z,"two\nlines",emea,\n'
        "i-2,c-2,voice,2024-05-01T10:00:00Z,short\n"
        "i-3,,voice,2024-05-01T10:00:00Z,no customer,emea,\n"
        "i-4,c-4,,2024-05-01T10:00:00Z,default channel,apac,\n"
    ).encode()
    results = read(data, Format.CSV)
    parsed = good(results)
    assert [(row.line, row.interaction.interaction_id) for row in parsed] == [(2, "i-1")]
    assert parsed[0].interaction.text == "two\nlines"
    assert dict(parsed[0].interaction.attributes) == {"region": "emea"}
    assert [(row.line, row.error.split(":")[0]) for row in bad(results)] == [
        (4, "expected 7 columns, found 5"),
        (5, "customer_id"),
        (6, "channel"),
    ]


def test_csv_default_channel_and_direction_fill_missing_cells() -> None:
    data = b"interaction_id,customer_id,channel,occurred_at\ni-1,c-1,,2024-05-01T10:00:00Z\n"
    options = ReadOptions(channel=ChannelName.TICKET, direction=DirectionName.INBOUND)
    (row,) = good(read(data, Format.CSV, options))
    assert row.interaction.channel == common_pb2.CHANNEL_TICKET
    assert row.interaction.direction == common_pb2.DIRECTION_INBOUND


def test_airline_preset_maps_tweets(tmp_path: Path) -> None:
    path = tmp_path / "Tweets.csv"
    path.write_text(TWEETS_HEADER + TWEETS_ROWS, encoding="utf-8")
    with path.open("rb") as stream:
        results = list(read_stream(stream, Format.CSV, ReadOptions(Preset.AIRLINE_TWEETS)))

    parsed = good(results)
    assert [row.line for row in parsed] == [2, 3, 5, 7]
    first = parsed[0].interaction
    assert first.interaction_id == "tweet-570306133677760513"
    assert first.customer_id == "cairdin"
    assert first.channel == common_pb2.CHANNEL_SOCIAL
    assert first.direction == common_pb2.DIRECTION_INBOUND
    assert first.occurred_at.ToDatetime(tzinfo=UTC) == datetime(2015, 2, 24, 19, 35, tzinfo=UTC)
    assert first.text == "@VirginAmerica What @dhepburn said."
    assert dict(first.attributes) == {"airline": "Virgin America"}

    second = parsed[1].interaction
    assert second.customer_id == "Late_Flightncy"
    assert second.text == '@united it\'s really "aggressive"\nto blast entertainment'
    assert dict(second.attributes) == {"airline": "United"}

    assert [(row.line, row.error) for row in bad(results)] == [(6, "name: is empty")]


def test_where_and_limit_select_rows(tmp_path: Path) -> None:
    data = (TWEETS_HEADER + TWEETS_ROWS).encode()
    united = ReadOptions(Preset.AIRLINE_TWEETS, where=[Condition.parse("airline=United")])
    results = read(data, Format.CSV, united)
    assert [row.line for row in results] == [3, 5, 6]  # the bad row at 6 is selected too

    limited = ReadOptions(Preset.AIRLINE_TWEETS, where=united.where, limit=2)
    assert [row.line for row in read(data, Format.CSV, limited)] == [3, 5]

    two = ReadOptions(
        Preset.AIRLINE_TWEETS,
        where=[Condition.parse("airline=United"), Condition.parse("airline_sentiment=positive")],
    )
    assert [row.line for row in read(data, Format.CSV, two)] == [5]

    with pytest.raises(SourceError, match="no column 'carrier'"):
        read(data, Format.CSV, ReadOptions(Preset.AIRLINE_TWEETS, where=[Condition("carrier", "")]))
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        Condition.parse("airline")


def test_jsonl_where_looks_into_attributes() -> None:
    row = {
        "interaction_id": "i-1",
        "customer_id": "c-1",
        "channel": "web",
        "occurred_at": "2024-05-01T10:00:00Z",
        "attributes": {"plan": "gold"},
    }
    data = (json.dumps(row) + "\n").encode()
    assert len(read(data, Format.JSONL, ReadOptions(where=[Condition("plan", "gold")]))) == 1
    assert read(data, Format.JSONL, ReadOptions(where=[Condition("plan", "silver")])) == []


def test_csv_needs_the_required_columns() -> None:
    with pytest.raises(SourceError, match="needs the columns airline, name, tweet_created"):
        read(b"tweet_id,text\n1,hi\n", Format.CSV, ReadOptions(Preset.AIRLINE_TWEETS))
    tweets = (TWEETS_HEADER + TWEETS_ROWS).encode()
    with pytest.raises(SourceError, match="no column channel, customer_id, interaction_id, occ"):
        read(tweets, Format.CSV)


def test_sanitize_id() -> None:
    assert sanitize_id("José Smith") == "Jos__Smith"
    assert sanitize_id("  ok.name@x/y:z-1  ") == "ok.name@x/y:z-1"
    assert sanitize_id("x" * 200) == "x" * 128
    with pytest.raises(RowError, match="is empty"):
        sanitize_id("  ")


def test_detect_format() -> None:
    assert detect_format(Path("a.jsonl"), None, None) is Format.JSONL
    assert detect_format(Path("a.CSV"), None, None) is Format.CSV
    assert detect_format(Path("a.txt"), Format.JSONL, None) is Format.JSONL
    assert detect_format(Path("tweets"), None, Preset.AIRLINE_TWEETS) is Format.CSV
    with pytest.raises(SourceError, match="--format"):
        detect_format(Path("a.txt"), None, None)


# Renderer ------------------------------------------------------------------------------------


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=160, color_system=None, highlight=False), buffer


def stamp(text: str) -> Timestamp:
    result = Timestamp()
    result.FromJsonString(text)
    return result


def test_render_nba_prints_explanation_with_attributions() -> None:
    explanation = common_pb2.Explanation(
        explainer="shap.PermutationExplainer(max_evals=64, seed=0)",
        base_value=-0.5,
        output_value=0.25,
        output_name="log-odds of success",
        summary="Two late flights this week make a voucher likely to land.",
        features=[
            common_pb2.FeatureAttribution(feature="context", value="late again", shap_value=0.5),
            common_pb2.FeatureAttribution(feature="tenure", value="2 years", shap_value=-0.25),
        ],
        memories=[
            common_pb2.MemoryAttribution(
                memory_id="mem-1",
                interaction_id="tweet-1",
                shap_value=0.5,
                trace_id="0af7651916cd43dd8448eb211c80319c",
                span_id="b7ad6b7169203331",
                snippet="@united [late] flight again",
                occurred_at=stamp("2015-02-24T19:35:00Z"),
            )
        ],
    )
    response = recommendation_pb2.NextBestActionResponse(
        recommendation_id="rec-9",
        model_version="nba-1.2",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        decided_at=stamp("2026-01-02T03:04:05Z"),
        actions=[
            recommendation_pb2.RecommendedAction(
                action_id="voucher",
                title="Offer a travel voucher",
                rank=1,
                score=0.4213,
                propensity=0.612,
                value=0.688,
                explanation=explanation,
            )
        ],
    )
    out, buffer = console()
    render_nba(out, response)
    text = buffer.getvalue()

    assert "1. Offer a travel voucher  score 0.4213  propensity 0.612  value 0.688" in text
    assert explanation.summary in text
    assert "log-odds of success: base -0.5000 → output +0.2500" in text
    assert "+0.5000  context = late again" in text
    assert "-0.2500  tenure = 2 years" in text
    assert "2015-02-24 19:35 UTC  tweet-1  “@united [late] flight again”" in text
    assert "memory mem-1  trace 0af7651916cd43dd8448eb211c80319c  span b7ad6b7169203331" in text
    assert "recommendation rec-9  model nba-1.2\ntrace 4bf92f3577b34da6a3ce929d0e0e4736" in text
    feature_lines = [line for line in text.splitlines() if "tenure" in line or "context" in line]
    positive, negative = feature_lines
    assert positive.index("│") < positive.index("█")
    assert negative.index("█") < negative.index("│")


def test_signed_bar_scales_to_the_largest_value() -> None:
    assert signed_bar(1.0, 1.0, half=4).plain == "    │████"
    assert signed_bar(-0.5, 1.0, half=4).plain == "  ██│    "
    assert signed_bar(0.0, 0.0, half=4).plain == "    │    "


def test_render_recall_table() -> None:
    memory = common_pb2.Memory(
        memory_id="mem-7",
        interaction=common_pb2.Interaction(
            interaction_id="i-7",
            channel=common_pb2.CHANNEL_SOCIAL,
            occurred_at=stamp("2015-02-24T19:35:00Z"),
            text="lost   my\nbag",
        ),
    )
    response = memory_pb2.RecallResponse(
        memories=[
            memory_pb2.RecalledMemory(
                memory=memory,
                score=0.75,
                parts=memory_pb2.ScoreParts(semantic=0.5, lexical=0.25, recency=1, importance=0.5),
            )
        ],
        trace_id="t" * 32,
    )
    out, buffer = console()
    render_recall(out, response)
    text = buffer.getvalue()
    for expected in ("0.750", "0.50/0.25/1.00/0.50", "2015-02-24 19:35 UTC", "social"):
        assert expected in text
    assert "lost my bag" in text
    assert "mem-7" in text


def test_render_summary_lists_first_errors() -> None:
    tally = IngestTally(read=9, stored=2, duplicates=1)
    for line in range(2, 9):
        tally.error(f"line {line}: bad")
    out, buffer = console()
    render_summary(out, "x.csv", tally)
    text = buffer.getvalue()
    assert "x.csv: 9 rows read, 2 stored, 1 duplicates, 7 errors" in text
    assert "line 6: bad" in text
    assert "line 7: bad" not in text
    assert "… and 2 more" in text


# CLI against an in-process gRPC server -------------------------------------------------------


@dataclass
class Ingestion(ingestion_pb2_grpc.IngestionServiceServicer):
    """Rejects every single Ingest; stores batch items unless their text says 'reject'."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)

    def Ingest(  # noqa: N802
        self, request: ingestion_pb2.IngestRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.IngestResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "interaction.customer_id is unknown")
        raise AssertionError("abort returns only by raising")

    def IngestBatch(  # noqa: N802
        self, request: ingestion_pb2.IngestBatchRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.IngestBatchResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        self.batches.append([item.interaction_id for item in request.interactions])
        results = [
            ingestion_pb2.IngestResult(
                interaction_id=item.interaction_id,
                memory_id="" if "reject" in item.text else f"mem-{item.interaction_id}",
                error="interaction.text: rejected" if "reject" in item.text else "",
            )
            for item in request.interactions
        ]
        return ingestion_pb2.IngestBatchResponse(results=results, trace_id="a" * 32)


@contextmanager
def serving(add: Callable[[S, grpc.Server], None], servicer: S) -> Iterator[str]:
    """An in-process gRPC server with ``servicer``; yields its address."""
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        grpc_server.stop(None).wait()


@pytest.fixture
def server() -> Iterator[tuple[str, Ingestion]]:
    servicer = Ingestion()
    with serving(ingestion_pb2_grpc.add_IngestionServiceServicer_to_server, servicer) as address:
        yield address, servicer


def invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"MEMCRM_ADDRESS": None, "MEMCRM_API_KEY": None, "MEMCRM_TIMEOUT": None}
    result = runner.invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_server_error_prints_code_and_details_without_traceback(
    server: tuple[str, Ingestion],
) -> None:
    address, servicer = server
    code, out, err = invoke(
        "ingest", "--text", "hello", "--customer", "c-1", "--address", address, "--api-key", "k1"
    )
    assert code == 1
    assert err.splitlines()[0] == "error: INVALID_ARGUMENT: interaction.customer_id is unknown"
    assert "Traceback" not in err + out
    assert servicer.metadata[0]["authorization"] == "Bearer k1"


def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = invoke("recall", "c-1", "--address", f"127.0.0.1:{port}", "--timeout", "5")
    assert code == 1
    assert err.startswith("error: UNAVAILABLE: ")
    assert "memcrm serve" in err


def test_ingest_file_in_batches_reports_rows_by_line(
    server: tuple[str, Ingestion], tmp_path: Path
) -> None:
    address, servicer = server
    rows = [
        {
            "interaction_id": f"i-{n}",
            "customer_id": "c-1",
            "channel": "chat",
            "occurred_at": "2024-05-01T10:00:00Z",
            "text": "please reject" if n == 3 else "hi",
        }
        for n in range(1, 6)
    ]
    lines = [json.dumps(row) for row in rows]
    lines.insert(1, '{"interaction_id": "broken"')
    path = tmp_path / "interactions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code, out, err = invoke("ingest", str(path), "--batch-size", "2", "--address", address)
    assert code == 3
    assert servicer.batches == [["i-1", "i-2"], ["i-3", "i-4"], ["i-5"]]
    assert servicer.metadata[0]["authorization"] == "Bearer memcrm-dev"
    assert "interactions.jsonl: 6 rows read, 4 stored, 0 duplicates, 2 errors" in out
    assert "line 2: invalid JSON" in out
    assert "line 4 (i-3): interaction.text: rejected" in out
    assert "%" in err  # progress goes to stderr

    code, out, err = invoke("ingest", str(path), "--limit", "1", "--json", "--address", address)
    assert code == 0
    response = json.loads(out)
    assert response["results"][0]["memory_id"] == "mem-i-1"
    assert "1 rows read, 1 stored" in err


def test_usage_errors() -> None:
    code, _, err = invoke("ingest", "--text", "hi")
    assert code == 2
    assert "--customer" in err
    code, _, err = invoke("ingest", "--text", "hi", "--customer", "c-1", "--at", "yesterday")
    assert code == 2
    assert "ISO 8601" in err


def test_default_address_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMCRM_GRPC_HOST", raising=False)
    monkeypatch.delenv("MEMCRM_GRPC_PORT", raising=False)
    assert default_address() == "127.0.0.1:50051"
    monkeypatch.setenv("MEMCRM_GRPC_HOST", "10.0.0.5")
    monkeypatch.setenv("MEMCRM_GRPC_PORT", "6000")
    assert default_address() == "10.0.0.5:6000"


def test_every_command_exists() -> None:
    for command in ("ingest", "recall", "timeline", "nba", "serve"):
        code, out, _ = invoke(command, "--help")
        assert code == 0, command
        assert "Usage" in out


def test_shift_to_now_moves_every_row_by_whole_days_and_records_it() -> None:
    data = (TWEETS_HEADER + TWEETS_ROWS).encode()
    options = ReadOptions(Preset.AIRLINE_TWEETS)
    days = days_to_now(io.BytesIO(data), Format.CSV, options, date(2026, 11, 24))
    original = good(read(data, Format.CSV, options))
    shifted = good(read(data, Format.CSV, replace(options, shift_days=days)))
    newest = max(p.interaction.occurred_at.ToDatetime(tzinfo=UTC) for p in shifted)
    assert newest.date() == date(2026, 11, 23)
    for before, after in zip(original, shifted, strict=True):
        delta = (
            after.interaction.occurred_at.ToDatetime() - before.interaction.occurred_at.ToDatetime()
        )
        assert delta == timedelta(days=days)
        assert after.interaction.attributes["replay.shift_days"] == str(days)


@dataclass
class Signals(signals_pb2_grpc.SignalServiceServicer):
    """Ends each stream after two events, as the real server ends a stream after its lifetime."""

    requests: list[signals_pb2.WatchSignalsRequest] = field(default_factory=list)

    def WatchSignals(  # noqa: N802
        self, request: signals_pb2.WatchSignalsRequest, context: grpc.ServicerContext
    ) -> Iterator[signals_pb2.WatchSignalsResponse]:
        self.requests.append(request)
        start = int(request.after.split("-")[1]) + 1 if request.after.startswith("7-") else 0
        for seq in range(start, start + 2):
            yield signals_pb2.WatchSignalsResponse(
                event_id=f"7-{seq}",
                customer_id=f"c-{seq}",
                prediction=memory_pb2.Prediction(
                    name="support_need",
                    score=0.72,
                    explanation=common_pb2.Explanation(summary=f"Support need 0.72, event {seq}."),
                ),
                threshold=0.5,
                crossing=signals_pb2.SIGNAL_CROSSING_RISING,
            )


def test_watch_reconnects_after_the_last_event_and_stops_at_count() -> None:
    servicer = Signals()
    with serving(signals_pb2_grpc.add_SignalServiceServicer_to_server, servicer) as address:
        code, out, _ = invoke(
            "watch", "--name", "support_need", "--after", "7-0", "--count", "3",
            "--address", address,
        )  # fmt: skip
    assert code == 0
    assert [r.after for r in servicer.requests] == ["7-0", "7-2"]
    assert all(list(r.names) == ["support_need"] for r in servicer.requests)
    assert [line.split()[1] for line in out.splitlines() if "→" in line] == ["c-1", "c-2", "c-3"]
    assert "Support need 0.72, event 3." in out
