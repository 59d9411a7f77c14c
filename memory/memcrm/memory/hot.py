"""Hot state in Redis: nothing here that PostgreSQL cannot rebuild.

Holds the idempotency index (tenant, interaction_id) -> latest stored version and its content
hash, so a replayed interaction is answered without a database round trip, and each customer's
folded profile state (``memory.profile``), kept up to date at ingestion. Redis being down
costs speed, never correctness: every miss or error falls back to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
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


# Compare-and-set of many profile entries at once: KEYS[i] is set to ARGV[2i] when its current
# value's sha1 is ARGV[2i-1] ('' for "absent"); returns 1/0 per key. ARGV[#ARGV] is the TTL.
_SWAP_IF_UNCHANGED = """
local ttl = ARGV[#ARGV]
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  local ok
  if cur then ok = redis.sha1hex(cur) == ARGV[2 * i - 1] else ok = ARGV[2 * i - 1] == '' end
  if ok then
    redis.call('SET', key, ARGV[2 * i], 'EX', ttl)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
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
        self._swap_if_unchanged = self._redis.register_script(_SWAP_IF_UNCHANGED)

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

    def profiles(self, tenant_id: str, customer_ids: Sequence[str]) -> list[str | None] | None:
        """The cached profile states of several customers in one round trip (None: missing);
        None instead of the list when Redis fails."""
        if not customer_ids:
            return []
        try:
            values = self._redis.mget([self._profile_key(tenant_id, c) for c in customer_ids])
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis read failed (%s); using PostgreSQL", exc)
            return None
        return [_text(raw, c) for c, raw in zip(customer_ids, values, strict=True)]

    def swap_profiles(
        self, tenant_id: str, swaps: Mapping[str, tuple[str | None, str]]
    ) -> set[str] | None:
        """Set each customer's profile state to ``new`` where it still is ``expected`` (None:
        absent), atomically and in one round trip. Returns the customers whose entry changed
        meanwhile (left alone: the caller retries them one by one), or None when Redis failed.
        """
        if not swaps:
            return set()
        customers = list(swaps)
        args: list[str | int] = []
        for customer_id in customers:
            expected, new = swaps[customer_id]
            args += ["" if expected is None else hashlib.sha1(expected.encode()).hexdigest(), new]
        try:
            done = self._swap_if_unchanged(
                keys=[self._profile_key(tenant_id, c) for c in customers], args=[*args, _TTL_S]
            )
        except redis.RedisError as exc:
            log.warning("memcrm.hot: Redis profile update failed (%s); cache stays cold", exc)
            return None
        return {c for c, ok in zip(customers, done, strict=True) if not ok}

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
