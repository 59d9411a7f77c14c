"""Model activations: which model version serves a tenant, as an append-only log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from memcrm.memory.store import MemoryStore

NBA_MODEL = "nba"


@dataclass(frozen=True, slots=True)
class Activation:
    tenant_id: str
    model: str
    version: str
    activated_at: datetime
    activated_by: str


class Activations:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def activate(
        self, tenant_id: str, version: str, by: str, *, model: str = NBA_MODEL
    ) -> Activation:
        with self._store.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO model_activations (tenant_id, model, version, activated_by)"
                " VALUES (%s, %s, %s, %s) RETURNING activated_at",
                (tenant_id, model, version, by),
            ).fetchone()
        assert row is not None
        return Activation(tenant_id, model, version, row["activated_at"], by)

    def active(self, tenant_id: str, *, model: str = NBA_MODEL) -> Activation | None:
        """The tenant's latest activation; None when it never activated one (the default)."""
        with self._store.connection() as conn:
            row = conn.execute(
                "SELECT version, activated_at, activated_by FROM model_activations"
                " WHERE tenant_id = %s AND model = %s ORDER BY activated_at DESC LIMIT 1",
                (tenant_id, model),
            ).fetchone()
        if row is None:
            return None
        return Activation(
            tenant_id, model, row["version"], row["activated_at"], row["activated_by"]
        )
