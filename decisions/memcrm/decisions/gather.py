"""Everything a decision reads about a customer besides the recalled memories, as of a moment.

A decision's policies read the customer's profile (``memcrm.memory.profile``), the history of
what was recommended to them and what came of it, their marketing consent and the interaction
attributes the tenant's catalog declares. This module reads those from the stores, as they
were at the decision's ``as_of``, and turns them into the plain inputs of
``memcrm.decisions.recommender.DecisionInputs`` (the policy code itself stays pure).

Predictions (``prediction.churn_risk`` and the others) are computed only when the tenant's
catalog has a rule that reads them.

Contacts: memcrm recommends, the CRM acts. An action counts as a *contact* once the CRM has
recorded an outcome for it (``RecordOutcome``, any outcome: the customer was reached), at the
outcome's ``occurred_at`` and on the channel its decision was asked for (unspecified when the
request named none: such contacts count only towards caps without a channel). Asking for a
recommendation is not a contact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from memcrm.decisions.arbitration import CustomerHistory
from memcrm.decisions.contact import (
    CONSENT_MARKETING,
    ContactEvent,
    OutcomeEvent,
    latest_attributes,
    marketing_consent,
)
from memcrm.decisions.policy import DecisionContext, ProfileFacts
from memcrm.decisions.recommender import DecisionInputs
from memcrm.decisions.tenant_catalog import TenantCatalog
from memcrm.memory.decisions import DecisionStore
from memcrm.memory.profile import Profiles
from memcrm.memory.store import MemoryStore

# (tenant, customer, as_of, now) -> the customer's predictions (memcrm.decisions.predictions).
PredictionReader = Callable[[str, str, datetime, datetime], Mapping[str, float]]


class CustomerFacts:
    """Reads a customer's profile, contact/outcome history, consent and attributes."""

    def __init__(
        self,
        store: MemoryStore,
        profiles: Profiles,
        decisions: DecisionStore,
        predictions: PredictionReader | None = None,
    ) -> None:
        self._store = store
        self._profiles = profiles
        self._decisions = decisions
        self._predictions = predictions

    def inputs(
        self,
        tenant_id: str,
        customer_id: str,
        catalog: TenantCatalog,
        context: DecisionContext,
        *,
        as_of: datetime | None,
    ) -> DecisionInputs:
        """The inputs of a decision at ``context.now`` knowing what was recorded by ``as_of``
        (None: now, and the profile may come from the hot state)."""
        view = as_of or context.now
        seen = self._profiles.view(tenant_id, customer_id, as_of=as_of, render_at=context.now)
        profile = ProfileFacts() if seen is None else ProfileFacts.from_profile(*seen)
        if seen is not None and self._predictions is not None and catalog.reads_predictions:
            # Only for catalogs whose rules read them: the customer's recent memories as of
            # the decision, scored at the decision's moment (so a replay reads the same).
            scores = self._predictions(tenant_id, customer_id, view, context.now)
            profile = replace(profile, predictions=scores)
        rows = self._decisions.outcome_history(tenant_id, customer_id, as_of=view)
        keys = sorted({CONSENT_MARKETING, *catalog.schema.attributes})
        stated = [
            m.interaction
            for m in self._store.memories_with_attributes(tenant_id, customer_id, keys, as_of=view)
        ]
        declared = set(catalog.schema.attributes)
        attributes = latest_attributes(stated, context.now, declared)
        history = CustomerHistory(
            contacts=tuple(ContactEvent(r.action_id, r.channel, r.occurred_at) for r in rows),
            outcomes=tuple(OutcomeEvent(r.action_id, r.outcome, r.occurred_at) for r in rows),
            consent=marketing_consent(stated, context.now),
        )
        return DecisionInputs(
            context=context,
            catalog=catalog,
            profile=profile,
            history=history,
            attributes={key: a.value for key, a in attributes.items()},
        )
