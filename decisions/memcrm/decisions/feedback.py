"""The feedback loop's data: recorded outcomes joined to what was known at decision time.

Every outcome recorded with ``RecordOutcome`` belongs to a decision, and the decision record
says what the decision knew: its ``as_of`` and its request (customer, context). The example
for training is rebuilt from exactly that: the memories recall returned as of ``as_of`` for
the same context (bitemporal reads: nothing recorded later leaks in), their features as the
propensity model saw them (ages at the decision's moment), the context's embedding, the
action and whether it worked.

Labels: ``ACCEPTED`` and ``CONVERTED`` are a success, ``REJECTED`` and ``NO_RESPONSE`` are not.
When an action of a decision got several outcomes, the latest (by ``occurred_at``) counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from memcrm.core.ports import Embedder
from memcrm.core.types import Outcome
from memcrm.memory.recall import MemoryReader
from memcrm.memory.store import MemoryStore
from memcrm.models.nba import MemoryFeatures

SUCCESS = frozenset({Outcome.ACCEPTED, Outcome.CONVERTED})


@dataclass(frozen=True, slots=True)
class OutcomeExample:
    recommendation_id: str
    action_id: str
    success: bool
    decided_at: datetime
    memories: MemoryFeatures
    context: NDArray[np.float32] | None
    model_version: str  # the version that made the decision


def outcome_examples(
    store: MemoryStore,
    reader: MemoryReader,
    encoder: Embedder,
    tenant_id: str,
    *,
    memories: int = 32,
) -> list[OutcomeExample]:
    """One example per (decision, action) with a recorded outcome, oldest decision first."""
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (o.recommendation_id, o.action_id) o.recommendation_id,"
            " o.action_id, o.outcome, d.decided_at, d.as_of, d.customer_id, d.model_version,"
            " d.record -> 'request' ->> 'context' AS context"
            " FROM outcomes o JOIN decisions d"
            " ON d.tenant_id = o.tenant_id AND d.recommendation_id = o.recommendation_id"
            " WHERE o.tenant_id = %s"
            " ORDER BY o.recommendation_id, o.action_id, o.occurred_at DESC, o.recorded_at DESC",
            (tenant_id,),
        ).fetchall()
    rows.sort(key=lambda r: (r["decided_at"], str(r["recommendation_id"]), r["action_id"]))
    contexts = sorted({str(r["context"]) for r in rows if str(r["context"]).strip()})
    vectors = dict(zip(contexts, _encode(encoder, contexts), strict=True))
    out: list[OutcomeExample] = []
    recalled_for: dict[str, MemoryFeatures] = {}
    for r in rows:
        key = str(r["recommendation_id"])
        context = str(r["context"])
        vector = vectors.get(context)
        if key not in recalled_for:
            recalled = reader.recall_embedded(
                tenant_id,
                r["customer_id"],
                vector,
                top_k=memories,
                as_of=r["as_of"],
                query_text=context,
            )
            recalled_for[key] = MemoryFeatures.from_recalled(recalled, r["as_of"])
        out.append(
            OutcomeExample(
                recommendation_id=key,
                action_id=r["action_id"],
                success=Outcome(r["outcome"]) in SUCCESS,
                decided_at=r["decided_at"],
                memories=recalled_for[key],
                context=vector,
                model_version=r["model_version"],
            )
        )
    return out


def _encode(encoder: Embedder, texts: Sequence[str]) -> list[NDArray[np.float32]]:
    return list(encoder.encode(texts)) if texts else []
