from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.errors import InvalidArgument
from memcrm.core.types import Channel, Interaction
from memcrm.core.validation import check_bounded, check_id, check_interaction

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OK = Interaction("order-1:a@b/c.d_e", "cust-1", Channel.EMAIL, NOW, text="hello")


def field_of(fn: object, *args: object) -> str:
    with pytest.raises(InvalidArgument) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.field


def test_a_valid_interaction_passes() -> None:
    assert check_interaction(OK, "interaction", NOW) is OK


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interaction_id": ""}, "i.interaction_id"),
        ({"interaction_id": "x" * 129}, "i.interaction_id"),
        ({"interaction_id": "has space"}, "i.interaction_id"),
        ({"customer_id": "ünicode"}, "i.customer_id"),
        ({"channel": Channel.UNSPECIFIED}, "i.channel"),
        ({"occurred_at": NOW + timedelta(days=1, seconds=1)}, "i.occurred_at"),
        ({"occurred_at": datetime(2026, 1, 1)}, "i.occurred_at"),
        ({"text": "x" * (32 * 1024 + 1)}, "i.text"),
        ({"text": "é" * (16 * 1024 + 1)}, "i.text"),
        ({"actor_id": "bad actor"}, "i.actor_id"),
        ({"attributes": {"": "v"}}, "i.attributes"),
    ],
)
def test_each_rule_names_its_field(change: dict[str, object], field: str) -> None:
    assert field_of(check_interaction, replace(OK, **change), "i", NOW) == field  # type: ignore[arg-type]


def test_exactly_one_day_ahead_is_allowed() -> None:
    check_interaction(replace(OK, occurred_at=NOW + timedelta(days=1)), "i", NOW)


def test_ids_and_bounds() -> None:
    assert check_id("f", "a" * 128) == "a" * 128
    assert check_bounded("top_k", 0, 10, 100) == 10
    assert check_bounded("top_k", 100, 10, 100) == 100
    assert field_of(check_bounded, "top_k", 101, 10, 100) == "top_k"
    assert field_of(check_bounded, "top_k", -1, 10, 100) == "top_k"
