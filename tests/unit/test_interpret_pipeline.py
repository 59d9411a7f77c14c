"""The interpretation pipeline with the shipped models and real tenant configuration files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from memcrm.core.tenants import TenantConfigs
from memcrm.core.types import Channel, Direction, Interaction, Label
from memcrm.interpret.importance import importance
from memcrm.interpret.pipeline import Interpreter
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import EnrichmentModel

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
COMPLAINT = (
    "My card 4111 1111 1111 1111 was charged $89.99 twice for order #A77812 and your "
    "support line hung up on me. I am furious."
)
TENANT_YAML = """
version: 7
pii: {mode: store_as_is}
issues: {enabled: false}
products: [Travel Card]
competitors: [Globex Bank]
objections:
  - label: delivery
    description: The customer worries the goods will arrive too late.
    examples: ["Will it even get here before the wedding?", "Shipping takes far too long"]
"""


def message(text: str, **kw: object) -> Interaction:
    fields: dict[str, object] = {
        "interaction_id": "i-1",
        "customer_id": "c-1",
        "channel": Channel.EMAIL,
        "occurred_at": WHEN,
        "direction": Direction.INBOUND,
        "text": text,
    }
    fields.update(kw)
    return Interaction(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> EnrichmentModel:
    return EnrichmentModel()


@pytest.fixture(scope="module")
def configured(model: EnrichmentModel, tmp_path_factory: pytest.TempPathFactory) -> Interpreter:
    folder = tmp_path_factory.mktemp("tenants")
    (folder / "acme.yaml").write_text(TENANT_YAML)
    return Interpreter(model, TenantConfigs.load(Path(folder)))


def test_default_policy_redacts_cards_before_the_model_sees_the_text(
    configured: Interpreter,
) -> None:
    screened = configured.screen("demo", message(COMPLAINT))
    assert "4111" not in screened.interaction.text
    assert "4111" not in screened.model_text
    assert [r.type for r in screened.redactions] == ["payment_card"]
    types = {e.type for e in screened.entities}
    assert {"money", "order_number"} <= types and "payment_card" not in types


def test_a_tenant_may_store_text_as_is_and_name_its_products(configured: Interpreter) -> None:
    screened = configured.screen("acme", message(COMPLAINT + " Globex Bank never did this."))
    assert "4111 1111 1111 1111" in screened.interaction.text
    assert screened.redactions == ()
    assert {"payment_card", "competitor"} <= {e.type for e in screened.entities}


def test_a_decision_context_is_redacted_like_a_memory(configured: Interpreter) -> None:
    assert (
        configured.redacted_text("demo", COMPLAINT)
        == configured.screen("demo", message(COMPLAINT)).interaction.text
    )
    assert "4111" not in configured.redacted_text("demo", COMPLAINT)
    assert configured.redacted_text("acme", COMPLAINT) == COMPLAINT


def test_understanding_a_complaint(configured: Interpreter) -> None:
    screened = [configured.screen("demo", message(COMPLAINT))]
    (understood,) = configured.interpret("demo", screened)
    e = understood.enrichment
    assert e.sentiment is not None and e.sentiment.name == "negative"
    assert -1.0 <= e.sentiment_score < 0.0
    assert len(e.intents) == 3 and e.intents[0].confidence >= e.intents[1].confidence
    assert 0.0 < e.importance <= 1.0
    assert e.model_version.endswith("+tenant-config-default")
    assert e.redactions == screened[0].redactions
    vector = Encoder().encode([screened[0].model_text])[0]
    assert float(np.dot(vector, understood.embedding)) > 0.9999


def test_tenant_objection_labels_replace_the_default_set(configured: Interpreter) -> None:
    texts = ["Shipping takes ages, will it arrive before the wedding on Saturday?"]
    screened = [configured.screen("acme", message(t)) for t in texts]
    (understood,) = configured.interpret("acme", screened)
    assert [o.name for o in understood.enrichment.objections] == ["delivery"]
    assert understood.enrichment.model_version.endswith("+tenant-config-7")


def test_a_tenant_may_turn_off_the_airline_issue_types(configured: Interpreter) -> None:
    text = "Flight cancelled again and my bag is lost, this airline is a joke."
    (default,) = configured.interpret("demo", [configured.screen("demo", message(text))])
    (acme,) = configured.interpret("acme", [configured.screen("acme", message(text))])
    assert default.enrichment.issue is not None
    assert default.enrichment.topics == (default.enrichment.issue.name,)
    assert acme.enrichment.issue is None and acme.enrichment.topics == ()
    assert acme.enrichment.sentiment == default.enrichment.sentiment


def test_batching_across_requests_gives_the_same_answers(configured: Interpreter) -> None:
    a = ["Thanks, the upgrade was lovely!", COMPLAINT]
    b = ["How do I change my PIN?"]
    together = configured.analyze_many([("banking77", a), ("banking77", b)])
    alone = [configured.analyze(a, "banking77"), configured.analyze(b, "banking77")]
    for batch, single in zip(together, alone, strict=True):
        for x, y in zip(batch, single, strict=True):
            # Batch composition changes float summation order, never the answer.
            assert x.sentiment.name == y.sentiment.name
            assert [i.name for i in x.intents] == [i.name for i in y.intents]
            assert np.allclose([i.confidence for i in x.intents], [i.confidence for i in y.intents])
            assert np.allclose(x.embedding, y.embedding, atol=1e-5)


def test_importance_rises_with_each_signal_and_stays_in_range() -> None:
    plain = importance(
        sentiment=Label("neutral", 0.9),
        issue=None,
        objections=(),
        entities=(),
        channel=Channel.CHAT,
        direction=Direction.INBOUND,
    )
    angry = importance(
        sentiment=Label("negative", 0.95),
        issue=Label("Lost Luggage", 0.9),
        objections=(Label("price", 0.8),),
        entities=(),
        channel=Channel.VOICE,
        direction=Direction.INBOUND,
    )
    said_by_us = importance(
        sentiment=Label("negative", 0.95),
        issue=Label("Lost Luggage", 0.9),
        objections=(Label("price", 0.8),),
        entities=(),
        channel=Channel.VOICE,
        direction=Direction.OUTBOUND,
    )
    assert 0.0 < plain < angry <= 1.0
    assert said_by_us == pytest.approx(angry / 2, abs=1e-6)
