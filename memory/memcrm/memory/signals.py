"""Proactive signals in Redis: each customer's last predictions, and each tenant's event stream.

Why Redis: a signal is derived state. The last predictions decide whether a new one *crossed* a
threshold; the event stream lets a CRM resume ``WatchSignals`` after a disconnect. Both can be
lost without losing a memory: PostgreSQL keeps every interaction and the next ingestion
recomputes. What losing them costs is stated where it happens (a lost score makes the customer
look new, so a prediction above its threshold is announced again; a lost stream entry is an
event a disconnected client will not see).

Keys (tenant ids may contain ``:``, so their length prefixes them):

* ``memcrm:signals:<len>:<tenant>:<customer>`` -- JSON ``{"w": watermark, "s": {name: score}}``.
  ``w`` orders computations: replicas may finish out of order, and an older computation
  (fewer memories known) never overwrites a newer one.
* ``memcrm:signal-events:<len>:<tenant>`` -- a Redis stream of JSON events, trimmed to about
  ``maxlen`` entries. Entry ids (``<ms>-<seq>``) are the resume cursors.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
import redis.asyncio

from memcrm.core.errors import InvalidArgument, StoreUnavailable
from memcrm.core.types import Crossing, Prediction, SignalEvent, TraceRef
from memcrm.memory.decisions import explanation_from_json, explanation_to_json

log = logging.getLogger(__name__)

_TTL_S = 90 * 24 * 3600
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")

# For every KEYS[i]: replace its value by ARGV[2i] unless the stored watermark is newer than
# ARGV[2i-1]. Returns per key the previous value, '' when absent, or '~' when left alone.
_SWAP_UNLESS_NEWER = """
local ttl = ARGV[#ARGV]
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  local keep = false
  if cur then
    local ok, old = pcall(cjson.decode, cur)
    if ok and type(old) == 'table' and tonumber(old['w']) and
       tonumber(old['w']) > tonumber(ARGV[2 * i - 1]) then
      keep = true
    end
  end
  if keep then
    out[i] = '~'
  else
    redis.call('SET', key, ARGV[2 * i], 'EX', ttl)
    out[i] = cur or ''
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Scores:
    """One computation of a customer's predictions; ``watermark`` orders computations."""

    watermark: int
    scores: Mapping[str, float]


class SignalState:
    """Last predictions per customer and the tenant event streams (synchronous side)."""

    def __init__(self, url: str, *, maxlen: int = 100_000) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._swap = self._redis.register_script(_SWAP_UNLESS_NEWER)
        self._maxlen = maxlen

    def close(self) -> None:
        self._redis.close()

    def swap(
        self, tenant_id: str, current: Mapping[str, Scores]
    ) -> dict[str, Mapping[str, float] | None]:
        """Store each customer's new scores and return the ones they replace (None: the
        customer had none). Customers whose stored scores come from a newer computation are
        left alone and missing from the result. ``StoreUnavailable`` when Redis fails."""
        if not current:
            return {}
        customers = sorted(current)
        args: list[str | int] = []
        for customer_id in customers:
            entry = current[customer_id]
            value = json.dumps({"w": entry.watermark, "s": dict(entry.scores)}, sort_keys=True)
            args += [entry.watermark, value]
        try:
            replaced = self._swap(
                keys=[state_key(tenant_id, c) for c in customers], args=[*args, _TTL_S]
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis: cannot update predictions ({exc})") from exc
        out: dict[str, Mapping[str, float] | None] = {}
        for customer_id, raw in zip(customers, replaced, strict=True):
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            if text == "~":
                continue
            out[customer_id] = _scores(text, customer_id) if text else None
        return out

    def publish(self, tenant_id: str, events: Sequence[SignalEvent]) -> list[str]:
        """Append events to the tenant's stream; returns their ids (resume cursors)."""
        if not events:
            return []
        key = stream_key(tenant_id)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for event in events:
                pipe.xadd(
                    key,
                    {"event": json.dumps(event_to_json(event), ensure_ascii=False)},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            ids = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis: cannot publish signals ({exc})") from exc
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


class SignalFeed:
    """Reads a tenant's event stream (asynchronous: a watcher waits without holding a thread)."""

    def __init__(self, url: str) -> None:
        self._redis = redis.asyncio.Redis.from_url(url, socket_connect_timeout=1.0)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def last_id(self, tenant_id: str) -> str:
        """The newest event's id, or ``0-0`` for an empty stream: where "only new" starts."""
        try:
            info = await self._redis.xrevrange(stream_key(tenant_id), count=1)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis: cannot read signals ({exc})") from exc
        if not info:
            return "0-0"
        raw = info[0][0]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def events(
        self,
        tenant_id: str,
        after: str,
        *,
        until: float = math.inf,
        block_ms: int = 1000,
        count: int = 100,
    ) -> AsyncIterator[SignalEvent]:
        """Events after ``after`` until ``time.monotonic()`` passes ``until`` (within one
        ``block_ms`` wait), or forever by default; the caller may stop iterating at any time."""
        check_cursor(after)
        key = stream_key(tenant_id)
        cursor = after
        while time.monotonic() < until:
            try:
                batches: Any = await self._redis.xread({key: cursor}, count=count, block=block_ms)
            except redis.RedisError as exc:
                raise StoreUnavailable(f"Redis: cannot read signals ({exc})") from exc
            for _, entries in batches or []:
                for raw_id, fields in entries:
                    cursor = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                    payload = fields.get(b"event", fields.get("event"))
                    if payload is None:
                        continue
                    try:
                        event = event_from_json(json.loads(payload), cursor)
                    except (ValueError, KeyError, TypeError):
                        log.warning("memcrm.signals: skipping malformed event %s", cursor)
                        continue
                    yield event


def check_cursor(after: str) -> None:
    if not STREAM_ID.fullmatch(after):
        raise InvalidArgument("after", "must be an event_id this stream returned (<ms>-<seq>)")


def state_key(tenant_id: str, customer_id: str) -> str:
    return f"memcrm:signals:{len(tenant_id)}:{tenant_id}:{customer_id}"


def stream_key(tenant_id: str) -> str:
    return f"memcrm:signal-events:{len(tenant_id)}:{tenant_id}"


def _scores(text: str, customer_id: str) -> Mapping[str, float] | None:
    try:
        raw = json.loads(text)
        return {str(k): float(v) for k, v in raw["s"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("memcrm.signals: ignoring malformed scores of %s", customer_id)
        return None


def event_to_json(e: SignalEvent) -> dict[str, Any]:
    p = e.prediction
    return {
        "customer_id": e.customer_id,
        "name": p.name,
        "score": p.score,
        "explanation": explanation_to_json(p.explanation),
        "previous_score": e.previous_score,
        "threshold": e.threshold,
        "crossing": int(e.crossing),
        "model_version": e.model_version,
        "evaluated_at": e.evaluated_at.isoformat(),
        "memory_id": e.memory_id,
        "interaction_id": e.interaction_id,
        "trace_id": e.trace.trace_id,
        "span_id": e.trace.span_id,
    }


def event_from_json(d: Mapping[str, Any], event_id: str) -> SignalEvent:
    previous = d.get("previous_score")
    return SignalEvent(
        customer_id=str(d["customer_id"]),
        prediction=Prediction(
            str(d["name"]), float(d["score"]), explanation_from_json(d["explanation"])
        ),
        previous_score=None if previous is None else float(previous),
        threshold=float(d["threshold"]),
        crossing=Crossing(int(d["crossing"])),
        model_version=str(d["model_version"]),
        evaluated_at=datetime.fromisoformat(d["evaluated_at"]),
        memory_id=str(d["memory_id"]),
        interaction_id=str(d["interaction_id"]),
        trace=TraceRef(str(d["trace_id"]), str(d["span_id"])),
        event_id=event_id,
    )
