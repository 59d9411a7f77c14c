"""Proactive signals, the parts without stores: crossings at their boundaries, stream filters,
tenant thresholds and the event codec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memcrm.core.errors import ConfigError, InvalidArgument
from memcrm.core.tenants import DEFAULT_SIGNAL_THRESHOLD, parse_config
from memcrm.core.types import (
    Crossing,
    Explanation,
    FeatureAttribution,
    MemoryAttribution,
    Prediction,
    SignalEvent,
    SignalFilter,
    TraceRef,
)
from memcrm.decisions.predictions import crossing, summarise
from memcrm.memory.signals import check_cursor, event_from_json, event_to_json

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "score", "expected"),
    [
        (None, 0.49, Crossing.UNSPECIFIED),  # new customer below: nothing to say
        (None, 0.5, Crossing.RISING),  # new customer at the threshold counts as above
        (0.49, 0.5, Crossing.RISING),
        (0.5, 0.51, Crossing.UNSPECIFIED),  # stays above
        (0.5, 0.4999, Crossing.FALLING),
        (0.2, 0.3, Crossing.UNSPECIFIED),  # stays below
        (0.9, 0.1, Crossing.FALLING),
    ],
)
def test_crossing_at_the_threshold(
    previous: float | None, score: float, expected: Crossing
) -> None:
    assert crossing(previous, score, 0.5) is expected


def _event(
    name: str = "churn_risk", customer: str = "c-1", way: Crossing = Crossing.RISING
) -> SignalEvent:
    explanation = Explanation(
        explainer="shap.ExactExplainer(seed=0)",
        base_value=-1.25,
        output_value=0.5,
        output_name=f"log-odds of {name}",
        features=[FeatureAttribution("tenure", "3 years", 0.25)],
        memories=[
            MemoryAttribution(
                "6c1f0e1e-0000-4000-8000-000000000001",
                "i-1",
                1.5,
                TraceRef("ab" * 16, "cd" * 8),
                "my bag never arrived",
                AT,
            )
        ],
        summary="Churn risk 0.62 from 1 memory.",
    )
    return SignalEvent(
        customer_id=customer,
        prediction=Prediction(name, 0.62, explanation),
        previous_score=None,
        threshold=0.6,
        crossing=way,
        model_version="signals-x",
        evaluated_at=AT,
        memory_id="6c1f0e1e-0000-4000-8000-000000000001",
        interaction_id="i-1",
        trace=TraceRef("ab" * 16, "cd" * 8),
    )


def test_filters_match_names_customers_and_direction() -> None:
    rising = _event()
    falling = _event(way=Crossing.FALLING)
    assert SignalFilter().matches(rising) and SignalFilter().matches(falling)
    assert SignalFilter(names=frozenset({"churn_risk"})).matches(rising)
    assert not SignalFilter(names=frozenset({"support_need"})).matches(rising)
    assert SignalFilter(customer_ids=frozenset({"c-1", "c-2"})).matches(rising)
    assert not SignalFilter(customer_ids=frozenset({"c-2"})).matches(rising)
    assert SignalFilter(rising_only=True).matches(rising)
    assert not SignalFilter(rising_only=True).matches(falling)


def test_event_json_round_trip_keeps_every_field() -> None:
    event = _event()
    again = event_from_json(event_to_json(event), "1700000000000-3")
    assert again.event_id == "1700000000000-3"
    assert again == SignalEvent(**{**_fields(event), "event_id": "1700000000000-3"})
    with_previous = SignalEvent(**{**_fields(event), "previous_score": 0.41})
    assert event_from_json(event_to_json(with_previous), "1-0").previous_score == 0.41


def _fields(e: SignalEvent) -> dict[str, object]:
    return {name: getattr(e, name) for name in SignalEvent.__dataclass_fields__}


@pytest.mark.parametrize("cursor", ["1700000000000-0", "0-0", "1-12"])
def test_cursor_accepts_stream_ids(cursor: str) -> None:
    check_cursor(cursor)


@pytest.mark.parametrize("cursor", ["", "latest", "12", "1-", "-1", "1-1-1", "$"])
def test_cursor_rejects_anything_else_naming_the_field(cursor: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_cursor(cursor)
    assert err.value.field == "after"


def test_tenant_thresholds_default_and_override() -> None:
    config = parse_config("version: 1\nsignals:\n  thresholds:\n    churn_risk: 0.7\n", "t.yaml")
    assert config.signals.threshold("churn_risk") == 0.7
    assert config.signals.threshold("support_need") == DEFAULT_SIGNAL_THRESHOLD
    assert parse_config("version: 1\n", "t.yaml").signals.threshold("churn_risk") == 0.5


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("thresholds:\n    churn: 0.6", "unknown prediction 'churn'"),
        ("thresholds:\n    churn_risk: 1.0", "signals.thresholds.churn_risk"),
        ("thresholds:\n    churn_risk: 0", "signals.thresholds.churn_risk"),
        ("thresold: {}", "signals.thresold"),
    ],
)
def test_bad_thresholds_fail_naming_the_field(body: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(f"version: 1\nsignals:\n  {body}\n", "t.yaml")


def test_summary_names_the_strongest_memory_and_its_direction() -> None:
    memories = _event().prediction.explanation.memories
    text = summarise("churn_risk", 0.62, memories, "the 2026-11-20 social message 'bag'")
    assert text == (
        "Churn risk 0.62 from 1 memory, raised most by the 2026-11-20 social message 'bag' "
        "(+1.50 log-odds)."
    )
    assert "baseline" in summarise("support_need", 0.1, [], "")
