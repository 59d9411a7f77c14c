"""The decision record: what a NextBestAction answer was, and everything needed to check it."""

from __future__ import annotations

import uuid
from datetime import datetime

from memcrm.core.types import Arithmetic, DecisionRecord, DecisionRequest
from memcrm.decisions.recommender import DecisionAudit


def decision_record(
    request: DecisionRequest,
    audit: DecisionAudit,
    decided_at: datetime,
    as_of: datetime,
    trace_id: str,
    context_encoder: str,
) -> DecisionRecord:
    """The record of one decision: the request, the answer, the catalog version, every
    catalog action considered with its numbers, its rank (0 when not returned) and why not, and
    the arithmetic (``context_encoder``: the format the current message was embedded in, ""
    for none)."""
    return DecisionRecord(
        recommendation_id=str(uuid.uuid4()),
        request=request,
        decided_at=decided_at,
        as_of=as_of,
        actions=tuple(audit.decision.actions),
        considered=audit.considered,
        model_version=audit.decision.model_version,
        model_sha256=audit.decision.model_sha256,
        trace_id=trace_id,
        catalog_version=audit.catalog_version,
        arithmetic=Arithmetic(scoring=audit.scoring_precision, context_encoder=context_encoder),
    )
