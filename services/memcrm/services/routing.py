"""How Serve's gRPC proxy spreads calls over the gateway replicas: fill the first, then spill.

Ray Serve's default router sends each call to the less busy of two random replicas, so even
one client's calls alternate between replicas. Every replica holds its own copy of the models,
and alternating makes the weights each decision streams through (the encoder's and the
decision model's) compete for the CPU caches: at one client, with two replicas, a decision's
stages ran 8-10% slower than with one (span p50s: understanding the message 11.6 vs 10.8 ms,
deciding 10.8 vs 9.8 ms) and NextBestAction's p50 was 39.5 ms against 37.8.

``FillFirstRouter`` sends a call to the first replica, in a fixed order, that has fewer than
``spill_at`` calls in flight (as this router counts them: Serve's cache of queue lengths), so
light load stays on one warm replica; when every replica is that busy, or a count is not known,
it lets Serve pick the least busy of all. Calls still wait nowhere but in a replica, and a
replica that dies is dropped by Serve as with its own routers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)

# Calls a replica takes before the next one gets some: the decisions it runs at once.
DEFAULT_SPILL_AT = 2

R = TypeVar("R")


class FillFirstRouter(FIFOMixin, RequestRouter):
    """Routes to the first replica below ``spill_at`` calls in flight, else the least busy."""

    def initialize_state(self, **kwargs: Any) -> None:
        spill_at = int(kwargs.get("spill_at", DEFAULT_SPILL_AT))
        if spill_at < 1:
            raise ValueError("spill_at must be at least 1")
        self._spill_at = spill_at

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        return fill_first(
            candidate_replicas,
            key=lambda r: str(r.replica_id.unique_id),
            in_flight=lambda r: self.replica_queue_len_cache.get(r.replica_id),
            spill_at=getattr(self, "_spill_at", DEFAULT_SPILL_AT),
        )


def fill_first(
    replicas: Sequence[R],
    *,
    key: Callable[[R], str],
    in_flight: Callable[[R], int | None],
    spill_at: int,
) -> list[list[R]]:
    """The replicas to try, ranked as Serve's routers rank them: ``[[r]]`` for the first
    replica in ``key`` order with fewer than ``spill_at`` calls in flight, else every replica
    in one rank (Serve then takes the least busy) when none is known to be below."""
    ordered = sorted(replicas, key=key)
    for replica in ordered:
        count = in_flight(replica)
        if count is not None and count < spill_at:
            return [[replica]]
    return [ordered] if ordered else []
