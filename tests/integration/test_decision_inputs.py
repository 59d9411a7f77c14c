"""What a decision reads about a customer (profile, contacts, outcomes, consent, attributes),
from real stores, as of a moment."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from memcrm.core.types import Channel, Direction, Interaction, Outcome, TraceRef
from memcrm.decisions.gather import CustomerFacts
from memcrm.decisions.policy import DecisionContext
from memcrm.decisions.tenant_catalog import builtin_catalog, parse_catalog
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.decisions import DecisionStore
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor
from memcrm.memory.profile import Profiles
from memcrm.memory.store import MemoryStore
from tests.integration.test_decision_store import record

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

CATALOG = parse_catalog(
    """
version: 2
attributes: {tier: string}
actions:
  - id: baggage_trace
    title: Trace the bag
    description: Open a baggage trace.
    channels: [email]
    value: 3.0
""",
    "t.yaml",
)


def said(i: str, text: str, at: datetime, **attributes: str) -> Interaction:
    return Interaction(
        interaction_id=i,
        customer_id="alice",
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=at,
        text=text,
        attributes=attributes,
    )


def test_inputs_read_what_was_known_at_as_of(
    store: MemoryStore, hot: HotState, interpreter: Interpreter
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ingestor = Ingestor(store, hot, interpreter)
    decisions = DecisionStore(store)
    facts = CustomerFacts(store, Profiles(store, hot), decisions)

    ingestor.ingest(
        tenant,
        [
            said("a", "My suitcase never arrived in Boston.", T0, tier="silver"),
            said("b", "Please contact me by email from now on.", T0 + timedelta(hours=1)),
        ],
        TRACE,
    )
    before_consent = datetime.now(UTC)
    ingestor.ingest(
        tenant,
        [
            said(
                "c",
                "Stop sending me offers.",
                T0 + timedelta(hours=2),
                **{"consent.marketing": "false", "tier": "gold"},
            )
        ],
        TRACE,
    )
    decided = record("alice", T0 + timedelta(hours=3))
    decided = replace(decided, request=replace(decided.request, channel=Channel.EMAIL))
    decisions.save(tenant, decided)
    before_outcome = datetime.now(UTC)
    decisions.record_outcome(
        tenant, decided.recommendation_id, "upgrade", Outcome.REJECTED, T0 + timedelta(hours=4)
    )
    context = DecisionContext(Channel.EMAIL, datetime.now(UTC), "any news?")

    got = facts.inputs(tenant, "alice", CATALOG, context, as_of=None)
    assert got.profile.interaction_count == 3
    assert got.profile.preferred_channel is Channel.EMAIL
    assert got.history.consent.marketing is False
    assert got.history.consent.interaction_id == "c"
    assert got.attributes == {"tier": "gold"}
    assert [(c.action_id, c.channel) for c in got.history.contacts] == [("upgrade", Channel.EMAIL)]
    assert [(o.action_id, o.outcome) for o in got.history.outcomes] == [
        ("upgrade", Outcome.REJECTED)
    ]

    earlier = facts.inputs(tenant, "alice", CATALOG, context, as_of=before_consent)
    assert earlier.profile.interaction_count == 2
    assert earlier.history.consent.marketing is None
    assert earlier.attributes == {"tier": "silver"}
    assert earlier.history.outcomes == ()
    between = facts.inputs(tenant, "alice", CATALOG, context, as_of=before_outcome)
    assert between.history.consent.marketing is False
    assert between.history.outcomes == ()

    # Attributes the catalog does not declare are not read; an unknown customer is a blank.
    assert facts.inputs(tenant, "alice", builtin_catalog(), context, as_of=None).attributes == {}
    blank = facts.inputs(tenant, "nobody", CATALOG, context, as_of=None)
    assert blank.profile.interaction_count == 0
    assert blank.history.contacts == () and blank.history.consent.marketing is None


RETENTION = parse_catalog(
    """
version: 3
actions:
  - id: apology_credit
    title: Apologise and offer a travel credit
    description: Apologise for what went wrong and offer a credit.
    channels: [email]
    value: 2.0
    eligibility: ["prediction.churn_risk >= 0.3"]
""",
    "t.yaml",
)


def test_predictions_are_read_only_for_catalogs_whose_rules_read_them(
    store: MemoryStore, hot: HotState, interpreter: Interpreter
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    Ingestor(store, hot, interpreter).ingest(
        tenant,
        [said("a", "My suitcase never arrived in Boston and nobody calls back.", T0)],
        TRACE,
    )
    asked: list[tuple[str, str, datetime, datetime]] = []

    def predictions(
        tenant_id: str, customer: str, as_of: datetime, now: datetime
    ) -> dict[str, float]:
        asked.append((tenant_id, customer, as_of, now))
        return {"churn_risk": 0.42}

    facts = CustomerFacts(store, Profiles(store, hot), DecisionStore(store), predictions)
    now = datetime.now(UTC)
    context = DecisionContext(Channel.EMAIL, now, "")
    assert RETENTION.reads_predictions and not CATALOG.reads_predictions
    assert facts.inputs(tenant, "alice", CATALOG, context, as_of=None).profile.predictions == {}
    assert asked == []
    got = facts.inputs(tenant, "alice", RETENTION, context, as_of=None)
    assert got.profile.predictions == {"churn_risk": 0.42}
    assert asked == [(tenant, "alice", now, now)]  # as of the decision, scored at it
