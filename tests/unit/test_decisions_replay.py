"""Comparing a recorded decision with its recomputation: exact, field by field."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from memcrm.core.types import (
    Channel,
    ConsideredAction,
    DecisionRecord,
    DecisionRequest,
    Explanation,
    FeatureAttribution,
    MemoryAttribution,
    RecommendedAction,
    TraceRef,
)
from memcrm.decisions.replay import Replay, cannot_replay, compare

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def record() -> DecisionRecord:
    cited = MemoryAttribution("m-1", "i-1", 0.42, TraceRef("a" * 32, "b" * 16), "bag lost", T0)
    explanation = Explanation(
        "shap.ExactExplainer(seed=0)",
        -1.0,
        -0.2,
        "log-odds that baggage_trace succeeds",
        [FeatureAttribution("context", "any news?", 0.38)],
        [cited],
        "Recommended mainly because of the lost bag.",
    )
    return DecisionRecord(
        recommendation_id="r-1",
        request=DecisionRequest("alice", "any news?", Channel.EMAIL, 1, None),
        decided_at=T0,
        as_of=T0,
        actions=(
            RecommendedAction("baggage_trace", "Trace", 1, 1.35, 0.45, 3.0, explanation),
        ),
        considered=(
            ConsideredAction("baggage_trace", "Trace", -0.2, 0.45, 3.0, 1.35, 1, ""),
            ConsideredAction(
                "loyalty_thanks", "Thanks", -1.0, 0.27, 1.5, 0.0, 0, "filtered",
                filtered_by="suitability", policy="suitability[0]", reads_json="{}",
            ),
        ),
        model_version="nba-1",
        model_sha256="c" * 64,
        trace_id="d" * 32,
        catalog_version="airline-1",
    )  # fmt: skip


def test_an_equal_recomputation_is_identical() -> None:
    assert compare(record(), record()) == Replay(True, "")
    got = compare(record(), replace(record(), trace_id="e" * 32, recommendation_id="r-2"))
    assert got.identical and got.diff == "", "ids and traces of the replay are not compared"


def test_every_difference_is_named_with_both_values() -> None:
    original = record()
    action = original.actions[0]
    memory = replace(action.explanation.memories[0], shap_value=0.4200001)
    changed = replace(
        original,
        actions=(
            replace(
                action,
                score=1.36,
                explanation=replace(action.explanation, memories=[memory]),
            ),
        ),
        considered=(
            original.considered[0],
            replace(original.considered[1], filtered_by="", policy="", rank=2),
        ),
        catalog_version="airline-2",
    )
    got = compare(original, changed)
    assert not got.identical
    assert got.diff.splitlines() == [
        "catalog_version: recorded 'airline-1', replayed 'airline-2'",
        "actions[baggage_trace].score: recorded 1.35, replayed 1.36",
        "actions[baggage_trace].explanation.memories[0]: recorded ('m-1', 0.42),"
        " replayed ('m-1', 0.4200001)",
        "considered[loyalty_thanks].rank: recorded 0, replayed 2",
        "considered[loyalty_thanks].filtered_by: recorded 'suitability', replayed ''",
        "considered[loyalty_thanks].policy: recorded 'suitability[0]', replayed ''",
    ]


def test_a_different_action_list_is_reported_not_zipped_silently() -> None:
    original = record()
    got = compare(original, replace(original, actions=()))
    assert got.diff.splitlines() == ["actions: recorded ['baggage_trace'], replayed []"]
    assert cannot_replay("model gone").diff == "not replayed: model gone"
