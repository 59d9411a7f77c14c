from __future__ import annotations

import pytest

from memcrm.core.tenants import PII_TYPES as CORE_PII_TYPES
from memcrm.core.tenants import PiiConfig
from memcrm.core.types import Entity
from memcrm.interpret.entities import EntityDetector
from memcrm.interpret.pii import PII_TYPES, PiiPolicy, redact

CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
TEXT = (
    f"Card {CARD} was charged $120 on 2015-02-17; refund to {IBAN} or mail jo@example.com. "
    f"Again: {CARD}."
)


def detect(text: str) -> list[Entity]:
    return EntityDetector(products=["Travel Card"]).detect(text)


def test_pii_types_have_one_source_of_truth() -> None:
    assert PII_TYPES is CORE_PII_TYPES
    assert {"email", "phone", "payment_card", "iban"} == PII_TYPES


def test_default_policy_redacts_cards_and_ibans_everywhere() -> None:
    out = redact(TEXT, detect(TEXT), PiiPolicy())
    assert out.text == (
        "Card [PAYMENT_CARD] was charged $120 on 2015-02-17; refund to [IBAN] or mail "
        "jo@example.com. Again: [PAYMENT_CARD]."
    )
    for secret in (CARD, IBAN, CARD.replace(" ", ""), "1111 1111", "0532 0130"):
        assert secret not in out.text
        assert all(secret not in e.text for e in (*out.redactions, *out.entities))
    assert [(e.type, e.text) for e in out.redactions] == [
        ("payment_card", "[PAYMENT_CARD]"),
        ("iban", "[IBAN]"),
        ("payment_card", "[PAYMENT_CARD]"),
    ]


def test_offsets_point_into_the_redacted_text() -> None:
    out = redact(TEXT, detect(TEXT), PiiPolicy())
    for e in (*out.redactions, *out.entities):
        assert out.text[e.start : e.end] == e.text
    assert [(e.type, e.text) for e in out.entities] == [
        ("money", "$120"),
        ("date", "2015-02-17"),
        ("email", "jo@example.com"),
    ]
    assert out.entities == tuple(sorted(out.entities, key=lambda e: e.start))


def test_chosen_types_only() -> None:
    policy = PiiPolicy("redact", frozenset({"email"}))
    out = redact(TEXT, detect(TEXT), policy)
    assert "jo@example.com" not in out.text and "[EMAIL]" in out.text
    assert CARD in out.text
    assert [e.type for e in out.redactions] == ["email"]
    assert all(out.text[e.start : e.end] == e.text for e in out.entities)


def test_store_as_is_keeps_the_text_and_every_entity() -> None:
    entities = detect(TEXT)
    out = redact(TEXT, entities, PiiPolicy("store_as_is", frozenset({"payment_card"})))
    assert out.text == TEXT
    assert out.redactions == ()
    assert list(out.entities) == entities


def test_entities_overlapping_a_redaction_are_dropped() -> None:
    text = "pay with 4111 1111 1111 1111 now"
    card = Entity(CARD, "payment_card", 9, 28)
    tail = Entity("1111 now", "product", 24, 32)  # a sloppy caller's overlapping span
    out = redact(text, [card, tail], PiiPolicy())
    assert out.text == "pay with [PAYMENT_CARD] now"
    assert out.entities == ()


def test_undetected_repeat_of_a_redacted_value_is_redacted_too() -> None:
    text = "iban DE89370400440532013000 (copy: xDE89370400440532013000)"
    out = redact(text, detect(text), PiiPolicy())
    assert "DE89370400440532013000" not in out.text
    assert out.text == "iban [IBAN] (copy: x[IBAN])"


def test_text_without_pii_is_unchanged() -> None:
    text = "Travel Card fees went up to $12 on Feb 17"
    out = redact(text, detect(text), PiiPolicy())
    assert out.text == text and out.redactions == ()
    assert [e.type for e in out.entities] == ["product", "money", "date"]


def test_entities_must_match_the_text() -> None:
    with pytest.raises(ValueError, match="does not match"):
        redact("abc", [Entity("x", "email", 0, 1)], PiiPolicy())


@pytest.mark.parametrize(
    ("mode", "types"),
    [("redact", frozenset({"ssn"})), ("hide", frozenset()), ("redact", frozenset({"money"}))],
)
def test_policy_rejects_unknown_modes_and_types(mode: str, types: frozenset[str]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        PiiPolicy(mode, types)  # type: ignore[arg-type]


def test_policy_from_tenant_config() -> None:
    assert PiiPolicy.from_config(PiiConfig()) == PiiPolicy()
    policy = PiiPolicy.from_config(PiiConfig(mode="redact", redact=("email", "phone")))
    assert policy.redact_types == {"email", "phone"}
    assert PiiPolicy.from_config(PiiConfig(mode="store_as_is")).active_types == frozenset()
