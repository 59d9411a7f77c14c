from __future__ import annotations

import time
from itertools import pairwise

import pytest

from memcrm.core.tenants import TenantConfig
from memcrm.core.types import Entity
from memcrm.interpret.entities import ENTITY_TYPES, EntityDetector, iban_checksum_ok, luhn_ok

DETECTOR = EntityDetector(
    products=["Travel Card", "Premium Checking", "C++ SDK"],
    competitors=["Globex Bank", "Initech"],
)


def found(text: str) -> list[tuple[str, str]]:
    entities = DETECTOR.detect(text)
    for e in entities:
        assert text[e.start : e.end] == e.text
        assert e.type in ENTITY_TYPES
    return [(e.type, e.text) for e in entities]


def of_type(text: str, kind: str) -> list[str]:
    return [t for k, t in found(text) if k == kind]


# --- email ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+crm@example.co.uk.", ["john.doe+crm@example.co.uk"]),
        ("a@b.io and X_Y@mail-server.example.com", ["a@b.io", "X_Y@mail-server.example.com"]),
        ("@handle, user@localhost, user@@example.com, name@example.c", []),
    ],
)
def test_emails(text: str, expected: list[str]) -> None:
    assert of_type(text, "email") == expected


# --- payment cards -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",  # Visa test number, spaced
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",  # Mastercard test number
        "3782 822463 10005",  # Amex, 4-6-5
        "378282246310005",
        "4222222222222",  # 13-digit Visa
    ],
)
def test_luhn_valid_cards_are_cards(card: str) -> None:
    assert found(f"my card {card} was declined") == [("payment_card", card)]


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "1234 5678 9012 3456",
        "4111 1111-1111 1111",  # mixed separators
        "41111 11111 11111 1",  # not a card grouping
        "0000 0000 0000 0000",  # passes Luhn, but no card starts with 0
        "41111111111111111111111",  # too long: part of a longer number
    ],
)
def test_look_alikes_are_not_cards(number: str) -> None:
    assert of_type(f"reference {number} here", "payment_card") == []


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_card_right_after_another_identifier() -> None:
    text = "order #A1234 4111 1111 1111 1111"
    assert found(text) == [("order_number", "A1234"), ("payment_card", "4111 1111 1111 1111")]


# --- IBAN ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68 5390 0754 7034",
    ],
)
def test_valid_ibans(iban: str) -> None:
    assert found(f"pay to {iban}, thanks") == [("iban", iban)]


@pytest.mark.parametrize(
    "text",
    [
        "pay to DE88 3704 0044 0532 0130 00, thanks",  # wrong check digits
        "pay to DE89 3704 0044 0532 0130 0, thanks",  # one character short for DE
        "pay to DE89370400440532013000123 thanks",  # glued to more digits
        "pay to ZZ89 3704 0044 0532 0130 00 thanks",  # no such country
    ],
)
def test_invalid_ibans_are_not_ibans_nor_anything_else(text: str) -> None:
    assert [k for k, _ in found(text) if k in {"iban", "payment_card", "phone"}] == []


def test_iban_followed_by_words_and_another_iban() -> None:
    text = "DE89 3704 0044 0532 0130 00 and GB82 WEST 1234 5698 7654 32"
    assert of_type(text, "iban") == ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"]
    assert iban_checksum_ok("GB82WEST12345698765432")


# --- phones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+442079460958",
        "+1 (555) 123-4567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "020 7946 0958",
        "07700 900123",
        "0044 20 7946 0958",
        "06 12 34 56 78",
    ],
)
def test_phones(phone: str) -> None:
    assert found(f"call me on {phone} today") == [("phone", phone)]


def test_phone_followed_by_another_number_keeps_the_phone() -> None:
    assert found("call 555-123-4567 2 times") == [("phone", "555-123-4567")]


@pytest.mark.parametrize(
    "text",
    [
        "on 17/02/2015",
        "on 17.02.2015",
        "on 2015-02-17",
        "order no. 778899",
        "5551234567",  # bare digits: could be anything
        "1 299 000",
        "123 456 7890",  # no NANP area code starts with 1
        "version 1.2.3.4",
        "+12345",  # too short
    ],
)
def test_dates_order_numbers_and_plain_numbers_are_not_phones(text: str) -> None:
    assert of_type(text, "phone") == []


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "$120",
        "$1,299.99",
        "120 USD",
        "USD 120",
        "€45.50",
        "45,50 €",
        "1,299.99 EUR",
        "1.299,99 EUR",
        "£3k",
        "$1.5m",
        "US$ 20",
        "20 dollars",
        "50 cents",
    ],
)
def test_money(amount: str) -> None:
    assert found(f"they charged {amount} yesterday") == [
        ("money", amount),
        ("date", "yesterday"),
    ]


@pytest.mark.parametrize(
    "text", ["120 items", "USD", "a $ sign", "50 pounds of luggage", "try 100 times", "$1,2345"]
)
def test_not_money(text: str) -> None:
    assert of_type(text, "money") == []


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "2015-02-17",
        "2015-02-17T10:30:00Z",
        "17/02/2015",
        "02/17/15",
        "17.02.2015",
        "Feb 17",
        "Feb 17th",
        "February 17, 2015",
        "17 February 2015",
        "17th of Feb",
        "February 2015",
        "Tuesday, February 17, 2015",
        "next Tuesday",
        "tomorrow",
    ],
)
def test_dates(when: str) -> None:
    assert found(f"it happened {when} at the airport") == [("date", when)]


@pytest.mark.parametrize(
    "text",
    [
        "2015-02-30",  # no such day
        "31/02/2015",
        "13/13/2015",
        "17-02-15",  # dashes need a four-digit year
        "I may 2 go",  # lowercase "may" is a verb
        "Feb 32",
        "Janet 5",
        "version 1.2.3",
        "1.2.15",  # dots need a four-digit year
    ],
)
def test_not_dates(text: str) -> None:
    assert of_type(text, "date") == []


# --- order and ticket numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("about order #A12345 please", [("order_number", "A12345")]),
        ("Order no. 778899 is late", [("order_number", "778899")]),
        ("order number: 12345-67", [("order_number", "12345-67")]),
        ("booking ref XYZ123", [("order_number", "XYZ123")]),
        ("PNR/confirmation code ABC123", [("order_number", "ABC123")]),
        ("PNR: QWERTY", [("order_number", "QWERTY")]),
        ("ticket 4471 is open", [("ticket_number", "4471")]),
        ("case ID CS-10234", [("ticket_number", "CS-10234")]),
        ("incident #INC0012345", [("ticket_number", "INC0012345")]),
    ],
)
def test_references(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order 1200 USD", [("money", "1200 USD")]),  # the amount, not an order number
        ("order #$120 refund", [("money", "$120")]),
        ("order of 25 items", []),
        ("my order is 5 days late", []),
        ("in case 2015 happens", []),  # a year
        ("order 2015-02-17", [("date", "2015-02-17")]),
        ("my ticket is confirmed", []),
        ("orders 12345", []),
        ("confirmation EMAILS", []),
        ("confirmation code: KXQZPT", [("order_number", "KXQZPT")]),  # a PNR may be letters
    ],
)
def test_references_stay_conservative(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


# --- products and competitors --------------------------------------------------------------


def test_gazetteer_is_case_insensitive_whole_word_and_multi_word() -> None:
    text = "I left GLOBEX bank for your travel\ncard, not initech's Premium Checking or C++ SDK."
    assert found(text) == [
        ("competitor", "GLOBEX bank"),
        ("product", "travel\ncard"),
        ("competitor", "initech"),
        ("product", "Premium Checking"),
        ("product", "C++ SDK"),
    ]


def test_gazetteer_needs_whole_words() -> None:
    assert found("Initechnology and Globex Banking and traveler cards") == []


def test_detector_for_a_tenant_config() -> None:
    config = TenantConfig(version="1", products=("Travel Card",), competitors=("Initech",))
    detector = EntityDetector.for_tenant(config)
    assert [e.type for e in detector.detect("Initech vs Travel Card")] == ["competitor", "product"]


def test_no_names_configured_means_no_gazetteer_entities() -> None:
    assert EntityDetector().detect("Globex Bank and Travel Card") == []


# --- precedence, offsets, performance ------------------------------------------------------


def test_mixed_text_offsets_and_order() -> None:
    text = (
        "Hi, I'm on Globex Bank's app. Order #A12345 for €45.50 on 17 February 2015 was charged "
        "to 4111 1111 1111 1111; refund to DE89 3704 0044 0532 0130 00 or mail me at "
        "jo@example.com / +44 20 7946 0958. Case ID CS-10234."
    )
    entities = DETECTOR.detect(text)
    assert [e.type for e in entities] == [
        "competitor",
        "order_number",
        "money",
        "date",
        "payment_card",
        "iban",
        "email",
        "phone",
        "ticket_number",
    ]
    assert entities == sorted(entities, key=lambda e: e.start)
    for a, b in pairwise(entities):
        assert a.end <= b.start
    assert all(text[e.start : e.end] == e.text for e in entities)


def test_email_wins_over_what_it_contains() -> None:
    assert found("4111111111111111@example.com") == [("email", "4111111111111111@example.com")]


def test_offsets_count_characters_not_bytes() -> None:
    text = "Ünïcödé ✈️ £3k on 17 février? no: 17 Feb"
    assert found(text) == [("money", "£3k"), ("date", "17 Feb")]
    assert DETECTOR.detect(text)[0] == Entity("£3k", "money", 11, 14)


@pytest.mark.parametrize(
    "unit",
    [
        "1",
        "1 ",
        "1-",
        "1.",
        "a@",
        "a.",
        "(1) ",
        "order #",
        "order 1",
        "$1,",
        "1,000",
        "Feb 1 ",
        "DE89 ",
        "+1 ",
        "travel ",
        " ",
        "4111 ",
    ],
)
def test_adversarial_32k_texts_are_fast(unit: str) -> None:
    text = (unit * (32 * 1024 // len(unit) + 1))[: 32 * 1024]
    started = time.perf_counter()
    DETECTOR.detect(text)
    assert time.perf_counter() - started < 2.0


def test_long_local_part_without_at_is_linear() -> None:
    text = "a" * (32 * 1024 - 1) + "@"
    started = time.perf_counter()
    assert DETECTOR.detect(text) == []
    assert time.perf_counter() - started < 2.0
