"""Hot state in Redis: nothing here that PostgreSQL cannot rebuild.

Holds the idempotency index (tenant, interaction_id) -> latest stored version and its content
hash, so a replayed interaction is answered without a database round trip. Redis being down
costs speed, never correctness: every miss or error falls back to PostgreSQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

_TTL_S = 7 * 24 * 3600
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
