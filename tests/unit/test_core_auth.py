from __future__ import annotations

import hashlib

import pytest

from memcrm.core.auth import DEV_KEY, KeyRing, require
from memcrm.core.errors import ConfigError, PermissionDenied, Unauthenticated

GLOBEX_SHA = hashlib.sha256(b"globex-secret").hexdigest()
DOC = f"""
keys:
  - {{key: acme-writer-key, tenant: acme, roles: [writer]}}
  - {{key_sha256: {GLOBEX_SHA}, tenant: globex, roles: [reader, auditor]}}
"""


def test_dev_default_accepts_the_dev_key_for_demo_with_every_role() -> None:
    p = KeyRing.configured(None, None).authenticate([("authorization", f"Bearer {DEV_KEY}")])
    assert p.tenant_id == "demo"
    assert p.roles == {"writer", "reader", "recommender", "auditor", "admin"}


def test_configured_keys_map_to_tenant_and_roles() -> None:
    ring = KeyRing.from_document(DOC, "test")
    acme = ring.authenticate([("authorization", "Bearer acme-writer-key")])
    assert (acme.tenant_id, acme.roles) == ("acme", frozenset({"writer"}))
    globex = ring.authenticate([("Authorization", b"bearer globex-secret")])
    assert globex.tenant_id == "globex"
    require(globex, "auditor")
    with pytest.raises(PermissionDenied):
        require(acme, "reader")


def test_configured_keys_replace_the_dev_key() -> None:
    ring = KeyRing.from_document(DOC, "test")
    with pytest.raises(Unauthenticated):
        ring.authenticate([("authorization", f"Bearer {DEV_KEY}")])


@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Basic abc")], [("authorization", "Bearer ")], [("x", "Bearer k")]],
)
def test_missing_or_malformed_credentials(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated):
        KeyRing.dev_default().authenticate(metadata)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("keys: []", "non-empty list"),
        ("keys: [{key: long-enough, tenant: t, roles: [root]}]", "unknown roles"),
        ("keys: [{key: short, tenant: t, roles: [reader]}]", "at least 8"),
        ("keys: [{key: long-enough, tenant: 'a b', roles: [reader]}]", "tenant"),
        ("keys: [{key: long-enough, tenant: t, roles: [reader], extra: 1}]", "unknown fields"),
        ("keys: [{tenant: t, roles: [reader]}]", "exactly one"),
        ("{{{", "not YAML"),
    ],
)
def test_bad_key_documents_fail_fast(doc: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeyRing.from_document(doc, "MEMCRM_API_KEYS")
