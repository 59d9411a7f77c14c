"""Hot state in Redis: nothing here that PostgreSQL cannot rebuild.

Holds the idempotency index (tenant, interaction_id) -> latest stored version and its content
hash, so a replayed interaction is answered without a database round trip, and each customer's
folded profile state (``memory.profile``), kept up to date at ingestion. Redis being down
costs speed, never correctness: every miss or error falls back to PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

_TTL_S = 7 * 24 * 3600
# Optimistic updates of one profile entry before giving up and dropping it.
_PROFILE_ATTEMPTS = 5
# Set only if the entry is newer than what is there: replicas may finish out of order.
_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^[^|]*|(%d+)|'))
  if v and v >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class KnownVersion:
    memory_id: str
    version: int
    content_sha256: bytes
    enrichment_json: str


class HotState:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)

    def close(self) -> None:
        self._redis.close()

    @staticmethod
    def _key(tenant_id: str, interaction_id: str) -> str:
        # Tenant ids may contain ':'; the length prefix keeps keys unambiguous.
        return f"memcrm:idem:{len(tenant_id)}:{tenant_id}:{interaction_id}"

    def known(self, tenant_id: str, interaction_ids: list[str]) -> dict[str, KnownVersion]:
        if not interaction_ids:
            return {}
        try:
            values = self._redis.mget([self._key(tenant_id, i) for i in interaction_ids])
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis read failed (%s); using PostgreSQL", exc)
            return {}
        found: dict[str, KnownVersion] = {}
        for interaction_id, raw in zip(interaction_ids, values, strict=True):
            if raw is None:
                continue
            try:
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                memory_id, version, digest, enrichment = text.split("|", 3)
                found[interaction_id] = KnownVersion(
                    memory_id, int(version), bytes.fromhex(digest), enrichment
                )
            except ValueError:
                log.warning("memcrm.hot: ignoring a malformed entry for %s", interaction_id)
        return found

    def remember(self, tenant_id: str, entries: dict[str, KnownVersion]) -> None:
        if not entries:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for interaction_id, k in entries.items():
                value = f"{k.memory_id}|{k.version}|{k.content_sha256.hex()}|{k.enrichment_json}"
                self._set_if_newer(
                    keys=[self._key(tenant_id, interaction_id)],
                    args=[value, k.version, _TTL_S],
                    client=pipe,
                )
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis write failed (%s); cache stays cold", exc)

    @staticmethod
    def _profile_key(tenant_id: str, customer_id: str) -> str:
        return f"memcrm:profile:{len(tenant_id)}:{tenant_id}:{customer_id}"

    def profile(self, tenant_id: str, customer_id: str) -> str | None:
        """The cached profile state of a customer; None when missing or Redis fails."""
        try:
            raw = self._redis.get(self._profile_key(tenant_id, customer_id))
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis read failed (%s); using PostgreSQL", exc)
            return None
        return _text(raw, customer_id)

    def update_profile(
        self, tenant_id: str, customer_id: str, update: Callable[[str | None], str | None]
    ) -> bool:
        """Replace a customer's profile state by ``update(current)`` atomically.

        Optimistic: the key is WATCHed while ``update`` computes, and the write is retried
        from a fresh read when another writer got there first; ``update`` returning None
        leaves the entry alone. After ``_PROFILE_ATTEMPTS`` lost races the entry is dropped
        (the next read rebuilds it). Exceptions of ``update`` propagate, the entry untouched.
        Returns False when Redis failed, so a caller can stop trying for now.
        """
        key = self._profile_key(tenant_id, customer_id)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(_PROFILE_ATTEMPTS):
                    try:
                        pipe.watch(key)  # type: ignore[no-untyped-call]
                        new = update(_text(pipe.get(key), customer_id))
                        if new is None:
                            pipe.unwatch()
                            return True
                        pipe.multi()
                        pipe.set(key, new, ex=_TTL_S)
                        pipe.execute()
                        return True
                    except redis.WatchError:
                        continue
            log.warning("memcrm.hot: profile of %s stays contended; dropping it", customer_id)
            self._redis.delete(key)
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis profile update failed (%s); cache stays cold", exc)
            return False
        return True

    def forget_profile(self, tenant_id: str, customer_id: str) -> None:
        """Drop a customer's profile state, so the next read rebuilds it."""
        try:
            self._redis.delete(self._profile_key(tenant_id, customer_id))
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis delete failed (%s)", exc)


def _text(raw: object, what: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    log.warning("memcrm.hot: ignoring a malformed profile entry for %s", what)
    return None
