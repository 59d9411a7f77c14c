from __future__ import annotations

import pytest

from memcrm.core.errors import ConfigError
from memcrm.core.settings import load_settings


def test_defaults_are_the_local_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEMCRM_DATABASE_URL", "MEMCRM_REDIS_URL", "MEMCRM_GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.embedded and s.grpc_host == "127.0.0.1" and s.grpc_port == 50051


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMCRM_GRPC_PORT", "6000")
    monkeypatch.setenv("MEMCRM_DATABASE_URL", "postgresql://db/memcrm")
    monkeypatch.setenv("MEMCRM_REDIS_URL", "redis://cache:6379/0")
    s = load_settings()
    assert s.grpc_port == 6000 and not s.embedded


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEMCRM_GRPC_PORT", "not-a-port"),
        ("MEMCRM_GRPC_PORT", "70000"),
        ("MEMCRM_INGESTION_NUM_CPUS", "0"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_unknown_memcrm_variables_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMCRM_GRPC_PROT", "6000")
    with pytest.raises(ConfigError, match="MEMCRM_GRPC_PROT"):
        load_settings()
