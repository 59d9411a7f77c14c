"""Keyset page tokens shared by the paged reads (timeline, decision records).

A token is the position after the last row of a page, plus the customer it belongs to and,
where a read pins one, its ``as_of``; it is opaque to clients (urlsafe base64 of JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from memcrm.core.errors import InvalidArgument


@dataclass(frozen=True)
class PagePosition:
    """After row (``at``, ``row_id``) of ``customer_id``'s rows, as seen at ``as_of``."""

    customer_id: str
    at: datetime
    row_id: str
    as_of: datetime | None = None


def encode_token(position: PagePosition) -> str:
    doc = {
        "c": position.customer_id,
        "at": position.at.isoformat(),
        "id": position.row_id,
        "as_of": position.as_of.isoformat() if position.as_of else None,
    }
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def decode_token(token: str, customer_id: str) -> PagePosition:
    """The position a token names; ``page_token`` INVALID_ARGUMENT when it is not one of ours
    or belongs to another customer."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        if doc["c"] != customer_id:
            raise InvalidArgument("page_token", "belongs to another customer")
        uuid.UUID(doc["id"])
        as_of = datetime.fromisoformat(doc["as_of"]) if doc.get("as_of") else None
        return PagePosition(customer_id, datetime.fromisoformat(doc["at"]), doc["id"], as_of)
    except InvalidArgument:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise InvalidArgument("page_token", "is not a token this server issued") from None
