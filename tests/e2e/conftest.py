"""Starts the real Ray Serve application on the test session's stores, exporting spans to a
real OTLP receiver, with three API keys: two tenants and a reader-only key."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from memcrm.core.settings import Settings
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.migrate import migrate
from memcrm.services.run import ServeRuntime
from memcrm.v1 import common_pb2
from tests.e2e.otlp import OtlpCollector

KEY_DEMO = "memcrm-dev"
KEY_OTHER = "other-tenant-key"
KEY_READER = "demo-reader-key"
# WatchSignals streams end after this long (MEMCRM_SIGNALS_STREAM_MAX_S), short for the tests.
SIGNALS_STREAM_MAX_S = 4.0
API_KEYS = f"""
keys:
  - {{key: {KEY_DEMO}, tenant: demo, roles: [writer, reader, recommender, auditor, admin]}}
  - {{key: {KEY_OTHER}, tenant: other, roles: [writer, reader, recommender]}}
  - {{key: {KEY_READER}, tenant: demo, roles: [reader]}}
"""


def auth(key: str, **extra: str) -> list[tuple[str, str]]:
    """Call metadata carrying an API key (and any extra entries, e.g. traceparent)."""
    return [("authorization", f"Bearer {key}"), *extra.items()]


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


def history(
    customer: str, texts: list[str], *, channel: int, first: datetime, every: timedelta
) -> list[common_pb2.Interaction]:
    """Inbound interactions ``<customer>-<i>`` of the customer, ``every`` apart from ``first``."""
    return [
        common_pb2.Interaction(
            interaction_id=f"{customer}-{i}",
            customer_id=customer,
            channel=channel,  # type: ignore[arg-type]
            direction=common_pb2.DIRECTION_INBOUND,
            occurred_at=ts(first + i * every),
            text=text,
        )
        for i, text in enumerate(texts)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector()
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def catalogs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's tenant catalog directory (empty: every tenant on the built-in catalog),
    re-read twice a second when a file changes."""
    return tmp_path_factory.mktemp("catalogs")


@pytest.fixture(scope="session")
def model_registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's model registry (empty: only the default model)."""
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="session")
def service(
    stores: EmbeddedStores, collector: OtlpCollector, catalogs_dir: Path, model_registry_dir: Path
) -> Iterator[ServeRuntime]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = Settings(
        grpc_port=free_port(),
        http_port=free_port(),
        api_keys=API_KEYS,
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        catalogs_dir=catalogs_dir,
        catalog_reload_s=0.5,
        model_registry_dir=model_registry_dir,
        signals_stream_max_s=SIGNALS_STREAM_MAX_S,
        # More than one gateway replica, as served by default: what one replica changes
        # (model activations, catalogs, signal streams) must hold on the others.
        gateway_replicas=2,
    )
    migrate(stores.database_url)
    runtime = ServeRuntime(settings, stores.database_url, stores.redis_url)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def channel(service: ServeRuntime) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.address) as ch:
        yield ch
