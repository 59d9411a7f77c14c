"""The decision record: what a NextBestAction answer was, and everything needed to check it."""

from __future__ import annotations

import uuid
from datetime import datetime

from memcrm.core.types import ConsideredAction, DecisionRecord, DecisionRequest
from memcrm.decisions.recommender import DecisionAudit


def decision_record(
    request: DecisionRequest,
    audit: DecisionAudit,
    decided_at: datetime,
    as_of: datetime,
    trace_id: str,
) -> DecisionRecord:
    """The record of one decision: the request, the answer, and every catalog action the
    recommender considered with its numbers, its rank (0 when not returned) and why not."""
    ranks = {a.action_id: a.rank for a in audit.decision.actions}
    considered = tuple(
        ConsideredAction(
            action_id=s.action_id,
            title=s.title,
            log_odds=s.log_odds,
            propensity=s.propensity,
            value=s.value,
            score=s.score,
            rank=ranks.get(s.action_id, 0),
            reason=s.reason,
        )
        for s in audit.scored
    )
    return DecisionRecord(
        recommendation_id=str(uuid.uuid4()),
        request=request,
        decided_at=decided_at,
        as_of=as_of,
        actions=tuple(audit.decision.actions),
        considered=considered,
        model_version=audit.decision.model_version,
        model_sha256=audit.decision.model_sha256,
        trace_id=trace_id,
    )
