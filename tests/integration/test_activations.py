"""Model activations against a real PostgreSQL: the latest wins, per tenant, and all are kept."""

from __future__ import annotations

import uuid

import pytest

from memcrm.memory.activations import Activations
from memcrm.memory.store import MemoryStore

pytestmark = pytest.mark.integration


def test_the_latest_activation_serves_and_tenants_are_apart(store: MemoryStore) -> None:
    activations = Activations(store)
    tenant, other = (f"t-{uuid.uuid4().hex[:8]}" for _ in range(2))
    assert activations.active(tenant) is None
    first = activations.activate(tenant, "nba-a", "key:0123456789ab")
    second = activations.activate(tenant, "nba-b", "key:ba9876543210")
    assert second.activated_at > first.activated_at
    got = activations.active(tenant)
    assert got is not None and (got.version, got.activated_by) == ("nba-b", "key:ba9876543210")
    assert activations.active(other) is None
    assert activations.active(tenant, model="churn") is None
