"""Versioned schema migrations, applied at start-up under an advisory lock.

Each ``migrations/NNNN_name.sql`` runs once, in order, in its own transaction; its sha256 is
recorded so an edited migration that was already applied fails start-up loudly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from memcrm.core.errors import ConfigError

_LOCK_KEY = 0x6D656D63726D  # "memcrm"
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("memcrm.memory.migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ConfigError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def migrate(database_url: str) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS memcrm_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, sha256 FROM memcrm_schema_migrations").fetchall()
            done = {int(v): str(s) for v, s in rows}
            for migration in available():
                if migration.version in done:
                    if done[migration.version] != migration.sha256:
                        raise ConfigError(
                            f"migration {migration.version:04d}_{migration.name} was edited after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO memcrm_schema_migrations (version, name, sha256)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.sha256),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
