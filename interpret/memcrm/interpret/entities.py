"""Deterministic entity detectors: PII, money, dates, order/ticket numbers, a tenant's names.

Why rules, not a model: PII redaction must be predictable and auditable (the same text always
loses the same spans), and checksums (Luhn for cards, ISO 13616 mod-97 for IBANs) separate a
real number from a look-alike better than any learned model.

Each detector proposes spans; overlapping spans are resolved by precedence, most specific
first, then the longer span, then the earlier one:

1. ``email``                          structural (an ``@`` and a domain);
2. ``iban``                           mod-97 and country length checked;
3. ``payment_card``                   Luhn checked;
4. ``order_number``, ``ticket_number`` anchored on a keyword (``order #``, ``case ID`` ...);
5. ``product``, ``competitor``         the tenant's own names;
6. ``money``                          anchored on a currency symbol, code or word;
7. ``date``;
8. ``phone``                          shape only, so it yields to everything else.

Every pattern starts with a look-behind that refuses to begin inside a run of the characters
it consumes, and repetitions need a separator between groups, so matching stays linear on
adversarial 32 KiB texts (no catastrophic backtracking).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from typing import Final

from memcrm.core.tenants import TenantConfig
from memcrm.core.types import Entity

EMAIL: Final = "email"
PHONE: Final = "phone"
PAYMENT_CARD: Final = "payment_card"
IBAN: Final = "iban"
MONEY: Final = "money"
DATE: Final = "date"
ORDER_NUMBER: Final = "order_number"
TICKET_NUMBER: Final = "ticket_number"
PRODUCT: Final = "product"
COMPETITOR: Final = "competitor"

# Lower wins an overlap (see the module docstring).
PRECEDENCE: Final = {
    EMAIL: 0,
    IBAN: 1,
    PAYMENT_CARD: 2,
    ORDER_NUMBER: 3,
    TICKET_NUMBER: 3,
    PRODUCT: 4,
    COMPETITOR: 4,
    MONEY: 5,
    DATE: 6,
    PHONE: 7,
}
ENTITY_TYPES: Final = frozenset(PRECEDENCE)


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    type: str


# --- email ---------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> Iterator[_Span]:
    for m in _EMAIL.finditer(text):
        yield _Span(m.start(), m.end(), EMAIL)


# --- IBAN ----------------------------------------------------------------------------------

# SWIFT IBAN registry: total length per country. Other country codes are not accepted.
_IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})\d{2}(?= ?[A-Za-z0-9])")


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def iban_checksum_ok(compact: str) -> bool:
    """ISO 13616 / ISO 7064 mod 97-10 on an IBAN without spaces."""
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged.upper())
    return int(digits) % 97 == 1


def _ibans(text: str) -> Iterator[_Span]:
    n = len(text)
    for m in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(m.group(1).upper())
        if length is None:
            continue
        # Collect the BBAN: alphanumerics, with single spaces allowed between them.
        chars, pos = list(text[m.start() : m.end()]), m.end()
        while len(chars) < length and pos < n:
            if _is_ascii_alnum(text[pos]):
                chars.append(text[pos])
                pos += 1
            elif text[pos] == " " and pos + 1 < n and _is_ascii_alnum(text[pos + 1]):
                pos += 1
            else:
                break
        if len(chars) != length or (pos < n and _is_ascii_alnum(text[pos])):
            continue
        if iban_checksum_ok("".join(chars)):
            yield _Span(m.start(), pos, IBAN)


# --- payment cards and phones: runs of digit groups ------------------------------------------

# A run of digit groups joined by one separator (or a parenthesised group). Every repetition
# starts with a separator or "(", so a run splits into groups one way only; runs are maximal.
_RUN = re.compile(
    r"(?<![\w+.,/-])(?:\+ ?)?(?:\d+|\(\d+\))"
    r"(?:[ .-]\d+|[ .-]?\(\d+\)|(?<=\))\d+)*(?!\w)"
)
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d\d $")
_GROUP = re.compile(r"\(\d+\)|\d+")
_NANP = re.compile(r"(?:1[ .-]?)?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[ .-])\d{3}[ .-]\d{4}")
_MAX_GROUPS = 8


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _is_card(groups: Sequence[str], seps: Sequence[str], digits: str) -> bool:
    """13-19 digits, no leading 0, grouped 4-4-4-4(-3), 4-6-5 or 4-6-4 or not at all, Luhn."""
    if not 13 <= len(digits) <= 19 or digits[0] == "0" or any(g[0] == "(" for g in groups):
        return False
    if len(set(seps)) > 1 or (seps and seps[0] not in " -"):
        return False
    lengths = [len(g) for g in groups]
    shaped = (
        len(lengths) == 1
        or (all(x == 4 for x in lengths[:-1]) and 1 <= lengths[-1] <= 4)
        or lengths in ([4, 6, 5], [4, 6, 4])
    )
    return shaped and luhn_ok(digits)


def _is_phone(window: str, groups: Sequence[str], digits: str) -> bool:
    """International (+CC or 00CC, 8-15 digits), NANP (3-3-4) or trunk-0 national (9-11)."""
    if window.startswith("+"):
        return 8 <= len(digits) <= 15 and digits[0] != "0"
    if len(groups) < 2:
        return False  # a bare run of digits could be anything
    if digits.startswith("00"):
        return 10 <= len(digits) <= 17 and digits[2] != "0"
    if _NANP.fullmatch(window):
        return True
    first = groups[0].strip("()")
    return (
        first.startswith("0")
        and 2 <= len(first) <= 5
        and all(len(g.strip("()")) >= 2 for g in groups[1:])
        and 9 <= len(digits) <= 11
    )


def _cards_and_phones(text: str) -> Iterator[_Span]:
    """Windows of a run's first groups, longest first: a number must start its run (a phone
    inside "12 34 555-123-4567" is doubtful), but may be followed by more ("... 4567 2 times").
    """
    for run in _RUN.finditer(text):
        if run.start() >= 5 and _IBAN_HEAD.match(text, run.start() - 5, run.start()):
            continue  # the rest of an IBAN that failed its checks is no card nor phone
        parts = list(_GROUP.finditer(text, run.start(), run.end()))[:_MAX_GROUPS]
        found: set[str] = set()
        for j in range(len(parts), 0, -1):
            groups = [p.group() for p in parts[:j]]
            digits = "".join(g.strip("()") for g in groups)
            if not 8 <= len(digits) <= 19:
                continue
            seps = [text[a.end() : b.start()] for a, b in pairwise(parts[:j])]
            window = text[run.start() : parts[j - 1].end()]
            kinds = []
            if not window.startswith("+") and _is_card(groups, seps, digits):
                kinds.append(PAYMENT_CARD)
            if _is_phone(window, groups, digits):
                kinds.append(PHONE)
            for kind in kinds:
                if kind not in found:  # the longest of each kind is enough
                    found.add(kind)
                    yield _Span(run.start(), run.start() + len(window), kind)


# --- money ---------------------------------------------------------------------------------

_CODES = (
    "USD|EUR|GBP|JPY|CHF|CAD|AUD|NZD|CNY|RMB|INR|SEK|NOK|DKK|PLN|CZK|HUF|RON|BRL|MXN|ZAR|SGD"
    "|HKD|KRW|RUB|AED|SAR|ILS"
)
_SYMBOL = r"(?:(?:US|CA|AU|NZ|HK|[ACRS])\$|[$€£¥₹₩₪₽])"
_AMOUNT = (
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
    r"(?!\d|[.,]\d)"
)
_SCALE = r"(?: ?(?:k|K|m|M|bn|mn|million|billion|thousand)(?!\w))?"
# "pounds" is left out: it is a weight as often as a currency ("£" is caught).
_WORDS = r"(?i:dollars?|euros?|bucks|cents?|pence|quid|yen|rupees?|francs?)"
_MONEY = re.compile(
    rf"(?<![\w.,])(?:"
    rf"{_SYMBOL} ?{_AMOUNT}{_SCALE}"
    rf"|(?:{_CODES}) ?{_AMOUNT}{_SCALE}"
    rf"|{_AMOUNT}{_SCALE} ?(?:[$€£¥₹₩₪₽]|(?:{_CODES})|{_WORDS})"
    rf")(?!\w)"
)


def _money(text: str) -> Iterator[_Span]:
    for m in _MONEY.finditer(text):
        yield _Span(m.start(), m.end(), MONEY)


# --- dates ---------------------------------------------------------------------------------

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
# "May" only capitalised: "may 2" is more often a verb than a date.
_MONTH = (
    r"(?:(?i:jan(?:uary|\.)?|feb(?:ruary|\.)?|mar(?:ch|\.)?|apr(?:il|\.)?|jun(?:e|\.)?"
    r"|jul(?:y|\.)?|aug(?:ust|\.)?|sep(?:t(?:ember|\.)?|\.)?|oct(?:ober|\.)?|nov(?:ember|\.)?"
    r"|dec(?:ember|\.)?)|May)(?![A-Za-z])"
)
_DAY = r"(?P<{}>3[01]|[12]\d|0?[1-9])(?i:st|nd|rd|th)?(?!\w)"
_YEAR = r"(?P<{}>(?:19|20|21)\d\d)(?!\w)"
_WEEKDAY = r"(?i:(?:mon|tues|wednes|thurs|fri|satur|sun)day)"
_DATE_WORDS = re.compile(
    rf"(?<![\w.,/-])(?:{_WEEKDAY},? )?(?:"
    rf"(?P<m1>{_MONTH}) {{1,2}}{_DAY.format('d1')}(?:,? {_YEAR.format('y1')})?"
    rf"|{_DAY.format('d2')}(?: of)? (?P<m2>{_MONTH})(?:,? {_YEAR.format('y2')})?"
    rf"|(?P<m3>{_MONTH}),? {_YEAR.format('y3')}"
    rf")"
)
_DATE_ISO = re.compile(
    r"(?<![\w.,/-])(?P<y>(?:19|20|21)\d\d)(?P<s>[-/])(?P<m>\d\d)(?P=s)(?P<d>\d\d)"
    r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:?\d\d)?)?"
    r"(?!\w|[./-]\d)"
)
# 17/02/2015, 02/17/15, 17.02.2015, 17-02-2015 (dots and dashes need a 4-digit year).
_DATE_NUMERIC = re.compile(
    r"(?<![\w.,/-])(?P<a>\d{1,2})(?P<s>[/.-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d\d)"
    r"(?!\w|[./-]\d)"
)
_DATE_RELATIVE = re.compile(
    rf"(?<!\w)(?i:(?:next|last|this|coming) (?:{_WEEKDAY}|week(?:end)?|month|year)"
    rf"|tomorrow|yesterday)(?!\w)"
)


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _month_number(name: str) -> int:
    return _MONTHS[name[:3].lower()]


def _date_words_ok(m: re.Match[str]) -> bool:
    for month_key, day_key, year_key in (("m1", "d1", "y1"), ("m2", "d2", "y2"), ("m3", "", "y3")):
        if m.group(month_key) is None:
            continue
        day = int(m.group(day_key)) if day_key else 1
        year = int(m.group(year_key)) if m.group(year_key) else 2000  # a leap year
        return _valid(year, _month_number(m.group(month_key)), day)
    return False


def _numeric_date_ok(m: re.Match[str]) -> bool:
    year_text = m.group("y")
    if m.group("s") in ".-" and len(year_text) != 4:
        return False
    year = int(year_text) if len(year_text) == 4 else 2000 + int(year_text)
    if len(year_text) == 4 and not 1900 <= year <= 2199:
        return False
    a, b = int(m.group("a")), int(m.group("b"))
    return _valid(year, b, a) or _valid(year, a, b)  # day/month or month/day


def _dates(text: str) -> Iterator[_Span]:
    for m in _DATE_WORDS.finditer(text):
        if _date_words_ok(m):
            yield _Span(m.start(), m.end(), DATE)
    for m in _DATE_ISO.finditer(text):
        if _valid(int(m.group("y")), int(m.group("m")), int(m.group("d"))):
            yield _Span(m.start(), m.end(), DATE)
    for m in _DATE_NUMERIC.finditer(text):
        if _numeric_date_ok(m):
            yield _Span(m.start(), m.end(), DATE)
    for m in _DATE_RELATIVE.finditer(text):
        yield _Span(m.start(), m.end(), DATE)


def _is_date(candidate: str) -> bool:
    if _DATE_ISO.fullmatch(candidate):
        return True
    m = _DATE_NUMERIC.fullmatch(candidate)
    return m is not None and _numeric_date_ok(m)


# --- order and ticket numbers ---------------------------------------------------------------

# The span is the identifier only; the keyword is context. Conservative on purpose: a keyword
# must come right before it, optionally with a marker (no., number, #, ID, code, ref, ":" or
# "is"), and the identifier must be 4-32 letters/digits/inner dashes holding a digit (PNRs:
# exactly 6 capitals may be letters only), not a date, not a year, not followed by a currency.
_MARKER = r"(?: ?(?i:number|num|no|nr|id|code|ref(?:erence)?)(?![A-Za-z])\.?)?(?: ?[:#]| is)? ?"
_NOT_MONEY = rf"(?! ?(?:[$€£¥₹%]|(?:{_CODES})(?![A-Za-z])|{_WORDS}(?!\w)))"
_ID = r"(?P<id>[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){3,31})(?![\w-]|[.,/]\d)"
_ORDER_KEYS = r"order|purchase order|booking|reservation|invoice|confirmation"
_TICKET_KEYS = r"ticket|case|incident|support request"
_PNR = re.compile(
    r"(?<!\w)(?i:pnr|record locator|confirmation (?:code|number|no\.?)"
    r"|booking (?:reference|ref\.?|code))(?: ?[:#]| is)? ?(?P<id>[A-Z0-9]{6})(?!\w)"
)
_KEYED = (
    (re.compile(rf"(?<!\w)(?i:{_ORDER_KEYS}){_MARKER}{_ID}{_NOT_MONEY}"), ORDER_NUMBER),
    (re.compile(rf"(?<!\w)(?i:{_TICKET_KEYS}){_MARKER}{_ID}{_NOT_MONEY}"), TICKET_NUMBER),
)
_YEARLIKE = re.compile(r"(?:19|20)\d\d")


def _references(text: str) -> Iterator[_Span]:
    for pattern, kind in _KEYED:
        for m in pattern.finditer(text):
            ident = m.group("id")
            if not any(ch.isdigit() for ch in ident) or _YEARLIKE.fullmatch(ident):
                continue
            if _is_date(ident):
                continue
            yield _Span(m.start("id"), m.end("id"), kind)
    for m in _PNR.finditer(text):
        yield _Span(m.start("id"), m.end("id"), ORDER_NUMBER)


# --- the tenant's names -------------------------------------------------------------------------


def _gazetteer(names: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive, whole-word pattern; longer names first so they win at a start."""
    unique = {" ".join(n.split()).casefold(): " ".join(n.split()) for n in names if n.strip()}
    if not unique:
        return None
    ordered = sorted(unique.values(), key=lambda n: (-len(n), n))
    alternatives = "|".join(r"\s{1,3}".join(map(re.escape, n.split())) for n in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


# --- resolution -------------------------------------------------------------------------------


def _resolve(spans: Sequence[_Span]) -> list[_Span]:
    """Keep non-overlapping spans: lower precedence number, then longer, then earlier."""
    order = sorted(spans, key=lambda s: (PRECEDENCE[s.type], s.start - s.end, s.start))
    kept: list[_Span] = []  # sorted by start, never overlapping
    starts: list[int] = []
    for span in order:
        i = bisect_left(starts, span.start)
        if i > 0 and kept[i - 1].end > span.start:
            continue
        if i < len(kept) and kept[i].start < span.end:
            continue
        kept.insert(i, span)
        starts.insert(i, span.start)
    return kept


class EntityDetector:
    """Finds entities in a text; build one per tenant (its product and competitor names)."""

    def __init__(self, products: Sequence[str] = (), competitors: Sequence[str] = ()) -> None:
        self._names = [
            (pattern, kind)
            for pattern, kind in (
                (_gazetteer(products), PRODUCT),
                (_gazetteer(competitors), COMPETITOR),
            )
            if pattern is not None
        ]

    @classmethod
    def for_tenant(cls, config: TenantConfig) -> EntityDetector:
        return cls(config.products, config.competitors)

    def detect(self, text: str) -> list[Entity]:
        """Non-overlapping entities sorted by start; ``text[e.start:e.end] == e.text``."""
        spans: list[_Span] = [
            *_emails(text),
            *_ibans(text),
            *_cards_and_phones(text),
            *_references(text),
            *_money(text),
            *_dates(text),
        ]
        for pattern, kind in self._names:
            spans.extend(_Span(m.start(), m.end(), kind) for m in pattern.finditer(text))
        return [Entity(text[s.start : s.end], s.type, s.start, s.end) for s in _resolve(spans)]
