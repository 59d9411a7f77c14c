"""Human-readable output of memcrm responses, drawn with rich."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from memcrm.v1 import common_pb2, ingestion_pb2, memory_pb2, recommendation_pb2, signals_pb2

BAR_HALF = 10
SNIPPET_CHARS = 70
MAX_SHOWN_ERRORS = 5


# Small formatters ---------------------------------------------------------------------------


def _enum_name(enum: EnumDescriptor, prefix: str, value: int) -> str:
    """``CHANNEL_SOCIAL`` as ``social``; an unknown number as itself."""
    known = enum.values_by_number.get(value)
    return known.name.removeprefix(prefix).lower() if known is not None else str(value)


def channel_name(value: int) -> str:
    return _enum_name(common_pb2.Channel.DESCRIPTOR, "CHANNEL_", value)


def direction_name(value: int) -> str:
    return _enum_name(common_pb2.Direction.DESCRIPTOR, "DIRECTION_", value)


def fmt_time(stamp: Timestamp) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def signed_bar(value: float, scale: float, half: int = BAR_HALF) -> Text:
    """A bar left of the axis for negative values, right of it for positive, |value|/scale long."""
    cells = 0 if scale <= 0 else min(half, round(abs(value) / scale * half))
    if value < 0:
        return Text.assemble(" " * (half - cells), ("█" * cells, "red"), "│", " " * half)
    return Text.assemble(" " * half, "│", ("█" * cells, "green"), " " * (half - cells))


# Ingestion ----------------------------------------------------------------------------------


def enrichment_line(enrichment: common_pb2.Enrichment) -> str:
    parts = []
    if enrichment.HasField("sentiment"):
        parts.append(f"sentiment {enrichment.sentiment.name} ({enrichment.sentiment_score:+.2f})")
    if enrichment.intents:
        parts.append("intents " + ", ".join(label.name for label in enrichment.intents))
    if enrichment.topics:
        parts.append("topics " + ", ".join(enrichment.topics))
    if enrichment.objections:
        parts.append("objections " + ", ".join(label.name for label in enrichment.objections))
    parts.append(f"importance {enrichment.importance:.2f}")
    return "; ".join(parts)


def render_ingest(console: Console, response: ingestion_pb2.IngestResponse) -> None:
    state = "already stored" if response.duplicate else "stored"
    console.print(
        Text(f"{state}: interaction {response.interaction_id} as memory {response.memory_id}")
    )
    console.print(Text(f"  {enrichment_line(response.enrichment)}"))
    console.print(Text(f"  trace {response.trace_id or '-'}"), style="dim")


@dataclass
class IngestTally:
    """What happened to the rows of one ``memcrm ingest FILE``."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    errors: int = 0
    unconfirmed: int = 0
    batches: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.first_errors) < MAX_SHOWN_ERRORS:
            self.first_errors.append(message)

    def add_results(
        self, results: Iterable[ingestion_pb2.IngestResult], lines: Sequence[int]
    ) -> None:
        for result, line in zip(results, lines, strict=False):
            if result.error:
                self.error(f"line {line} ({result.interaction_id}): {result.error}")
            elif result.duplicate:
                self.duplicates += 1
            else:
                self.stored += 1


def render_summary(console: Console, name: str, tally: IngestTally) -> None:
    line = (
        f"{name}: {tally.read} rows read, {tally.stored} stored, {tally.duplicates} duplicates, "
        f"{tally.errors} errors"
    )
    if tally.unconfirmed:
        line += f", {tally.unconfirmed} not confirmed"
    console.print(Text(line, style="bold"))
    if tally.first_errors:
        more = tally.errors - len(tally.first_errors)
        console.print(Text("first errors:" if more else "errors:"))
        for message in tally.first_errors:
            console.print(Text(f"  {message}", style="red"))
        if more:
            console.print(Text(f"  … and {more} more"))


class IngestProgress:
    """Progress through a file on stderr: a live bar on a terminal, a line per batch otherwise."""

    def __init__(self, console: Console, total_bytes: int) -> None:
        self._console = console
        self._total = max(total_bytes, 1)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                console=console,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._progress.add_task("reading", total=self._total)
            self._progress.start()

    def update(self, position: int, tally: IngestTally) -> None:
        text = f"{tally.read} rows: {tally.stored} new, {tally.duplicates} dup, {tally.errors} err"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=position, description=text)
        else:
            self._console.print(f"{min(100, position * 100 // self._total):3d}% {text}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# Memory -------------------------------------------------------------------------------------


def render_recall(console: Console, response: memory_pb2.RecallResponse) -> None:
    if not response.memories:
        console.print("no memories recalled")
        return
    table = Table(title="recalled memories, best first", title_justify="left")
    for name in ("score", "parts sem/lex/rec/imp", "date", "channel", "snippet", "memory id"):
        table.add_column(name, overflow="fold" if name == "memory id" else "ellipsis")
    for recalled in response.memories:
        memory, parts = recalled.memory, recalled.parts
        table.add_row(
            f"{recalled.score:.3f}",
            f"{parts.semantic:.2f}/{parts.lexical:.2f}/{parts.recency:.2f}/{parts.importance:.2f}",
            fmt_time(memory.interaction.occurred_at),
            channel_name(memory.interaction.channel),
            Text(snippet(memory.interaction.text)),
            Text(memory.memory_id),
        )
    console.print(table)
    console.print(Text(f"trace {response.trace_id or '-'}", style="dim"))


def render_timeline(console: Console, memories: Sequence[common_pb2.Memory]) -> None:
    if not memories:
        console.print("no memories")
        return
    table = Table(title="timeline, oldest first", title_justify="left")
    for name in ("date", "channel", "dir", "sentiment", "snippet", "interaction id"):
        table.add_column(name, overflow="fold" if name == "interaction id" else "ellipsis")
    for memory in memories:
        interaction = memory.interaction
        table.add_row(
            fmt_time(interaction.occurred_at),
            channel_name(interaction.channel),
            direction_name(interaction.direction),
            memory.enrichment.sentiment.name or "-",
            Text(snippet(interaction.text)),
            Text(interaction.interaction_id),
        )
    console.print(table)


# Recommendations ----------------------------------------------------------------------------


def render_explanation(console: Console, explanation: common_pb2.Explanation) -> None:
    if explanation.summary:
        console.print(Text(f"   {explanation.summary}", style="italic"))
    output = explanation.output_name or "model output"
    console.print(
        Text(
            f"   {output}: base {explanation.base_value:+.4f} → "
            f"output {explanation.output_value:+.4f}"
        )
    )
    if explanation.explainer:
        console.print(Text(f"   explainer {explanation.explainer}", style="dim"))
    values = [a.shap_value for a in explanation.features] + [
        a.shap_value for a in explanation.memories
    ]
    scale = max((abs(value) for value in values), default=0.0)
    if explanation.features:
        console.print("   features")
    for feature in explanation.features:
        console.print(
            Text.assemble(
                "     ",
                signed_bar(feature.shap_value, scale),
                f" {feature.shap_value:+.4f}  {feature.feature} = {feature.value}",
            )
        )
    if explanation.memories:
        console.print("   memories")
    for memory in explanation.memories:
        console.print(
            Text.assemble(
                "     ",
                signed_bar(memory.shap_value, scale),
                f" {memory.shap_value:+.4f}  {fmt_time(memory.occurred_at)}  ",
                (memory.interaction_id, "cyan"),
                f"  “{snippet(memory.snippet, 60)}”",
            )
        )
        console.print(
            Text(
                f"{' ' * (2 * BAR_HALF + 7)}memory {memory.memory_id}  trace {memory.trace_id}  "
                f"span {memory.span_id}",
                style="dim",
            )
        )


def render_nba(console: Console, response: recommendation_pb2.NextBestActionResponse) -> None:
    if not response.actions:
        console.print("no action recommended")
    for action in response.actions:
        console.print(
            Text.assemble(
                (f"{action.rank}. {action.title or action.action_id}", "bold"),
                f"  score {action.score:.4f}  propensity {action.propensity:.3f}  "
                f"value {action.value:.3f}  ",
                (f"({action.action_id})", "dim"),
            )
        )
        render_explanation(console, action.explanation)
        console.print()
    console.print(
        Text(
            f"recommendation {response.recommendation_id}  model {response.model_version}\n"
            f"trace {response.trace_id}  decided {fmt_time(response.decided_at)}",
            style="dim",
        )
    )


# Signals ------------------------------------------------------------------------------------


def render_signal(console: Console, event: signals_pb2.WatchSignalsResponse) -> None:
    """One event: who, which prediction moved where, and why (the explanation's summary)."""
    p = event.prediction
    rising = event.crossing == signals_pb2.SIGNAL_CROSSING_RISING
    before = f"{event.previous_score:.2f}" if event.HasField("previous_score") else "new"
    console.print(
        Text.assemble(
            (fmt_time(event.evaluated_at), "dim"),
            "  ",
            (event.customer_id, "cyan"),
            f"  {p.name} {before} → {p.score:.2f} ",
            ("▲" if rising else "▼", "red" if rising else "green"),
            f" threshold {event.threshold:.2f}",
            (f"  event {event.event_id}", "dim"),
        )
    )
    if p.explanation.summary:
        console.print(Text(f"   {p.explanation.summary}", style="italic"))
