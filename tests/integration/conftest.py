"""Fixtures of the integration tests: the memory store and the hot state on the session's real
PostgreSQL and Redis, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.migrate import migrate
from memcrm.memory.store import MemoryStore


@pytest.fixture(scope="module")
def store(stores: EmbeddedStores) -> Iterator[MemoryStore]:
    migrate(stores.database_url)
    s = MemoryStore(stores.database_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def hot(stores: EmbeddedStores) -> Iterator[HotState]:
    h = HotState(stores.redis_url)
    yield h
    h.close()
