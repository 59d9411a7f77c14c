"""API keys: each key stands for one tenant and a set of roles.

Keys are configured as a YAML or JSON document (``MEMCRM_API_KEYS_FILE`` or inline in
``MEMCRM_API_KEYS``)::

    keys:
      - key: "s3cret-acme-writer"          # or key_sha256: "<hex sha256 of the key>"
        tenant: acme
        roles: [writer, reader]

With nothing configured, the embedded default accepts ``memcrm-dev`` for tenant ``demo``
with every role (the server then listens on 127.0.0.1 only).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from memcrm.core.errors import ConfigError, PermissionDenied, Unauthenticated
from memcrm.core.types import ROLES, Principal
from memcrm.core.validation import ID_PATTERN

DEV_KEY = "memcrm-dev"
DEV_TENANT = "demo"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """Resolves a bearer token to a Principal; keys are held only as sha256 digests."""

    def __init__(self, entries: Mapping[str, Principal]) -> None:
        self._by_digest = dict(entries)

    @classmethod
    def dev_default(cls) -> KeyRing:
        digest = _digest(DEV_KEY)
        return cls({digest: Principal(DEV_TENANT, frozenset(ROLES), key_id(digest))})

    @classmethod
    def from_document(cls, text: str, source: str) -> KeyRing:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not YAML/JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
            raise ConfigError(f"{source}: expected a mapping with a non-empty list 'keys'")
        entries: dict[str, Principal] = {}
        for i, item in enumerate(doc["keys"]):
            where = f"{source}: keys[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: expected a mapping")
            unknown = set(item) - {"key", "key_sha256", "tenant", "roles"}
            if unknown:
                raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
            digest = _entry_digest(item, where)
            tenant = item.get("tenant")
            if not isinstance(tenant, str) or not ID_PATTERN.fullmatch(tenant):
                raise ConfigError(f"{where}.tenant: must be 1-128 characters of [A-Za-z0-9._:@/-]")
            roles = item.get("roles")
            if not isinstance(roles, list) or not roles:
                raise ConfigError(f"{where}.roles: expected a non-empty list")
            bad = [r for r in roles if r not in ROLES]
            if bad:
                raise ConfigError(f"{where}.roles: unknown roles {bad}; known: {sorted(ROLES)}")
            if digest in entries:
                raise ConfigError(f"{where}: the same key is listed twice")
            entries[digest] = Principal(tenant, frozenset(roles), key_id(digest))
        return cls(entries)

    @classmethod
    def configured(cls, file: Path | None, inline: str | None) -> KeyRing:
        if file is not None and inline is not None:
            raise ConfigError("set MEMCRM_API_KEYS_FILE or MEMCRM_API_KEYS, not both")
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"MEMCRM_API_KEYS_FILE: cannot read {file}: {exc}") from None
            return cls.from_document(text, str(file))
        if inline is not None:
            return cls.from_document(inline, "MEMCRM_API_KEYS")
        return cls.dev_default()

    @property
    def tenants(self) -> set[str]:
        return {p.tenant_id for p in self._by_digest.values()}

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        token = bearer_token(metadata)
        digest = _digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown API key")


def _entry_digest(item: Mapping[str, object], where: str) -> str:
    key, key_sha = item.get("key"), item.get("key_sha256")
    if (key is None) == (key_sha is None):
        raise ConfigError(f"{where}: give exactly one of 'key' or 'key_sha256'")
    if key is not None:
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"{where}.key: must be a string of at least 8 characters")
        return _digest(key)
    if not isinstance(key_sha, str) or len(key_sha) != 64:
        raise ConfigError(f"{where}.key_sha256: must be 64 hex characters")
    try:
        bytes.fromhex(key_sha)
    except ValueError:
        raise ConfigError(f"{where}.key_sha256: must be 64 hex characters") from None
    return key_sha.lower()


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    for name, value in metadata:
        if name.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        return token.strip()
    raise Unauthenticated("missing authorization metadata 'Bearer <api key>'")


def require(principal: Principal, role: str) -> None:
    if role not in principal.roles:
        raise PermissionDenied(f"this API key lacks the {role!r} role")


def key_id(digest: str) -> str:
    """A key's public identifier in records (e.g. who activated a model): the first 12 hex
    characters of its sha256, which says which configured key acted and reveals nothing."""
    return f"key:{digest[:12]}"
