"""Shared fixtures: real embedded PostgreSQL (pgvector) and Redis, and the real models."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from memcrm.core.tenants import TenantConfigs
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import EnrichmentModel


def _short_tmp(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    # Unix socket paths must stay short; pytest's basetemp can be deep.
    path = Path("/tmp") / f"memcrm-test-{os.getpid()}-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStores]:
    """A real PostgreSQL 18 with pgvector and a real Redis, started for this test session."""
    home = _short_tmp(tmp_path_factory, "stores")
    with EmbeddedStores(home, None, None) as started:
        yield started
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="session")
def enrichment_model() -> EnrichmentModel:
    return EnrichmentModel()


@pytest.fixture(scope="session")
def interpreter(enrichment_model: EnrichmentModel) -> Interpreter:
    """The shipped models with every tenant on the default configuration."""
    return Interpreter(enrichment_model, TenantConfigs.load(None))
