"""Decisions, their replays and model activations, run inside the gateway's process.

``memcrm.decisions.service.DecisionService`` on threads of its own, awaited by the gateway's
async RPC methods. Decisions run in the ingress replica, not in a deployment behind it: a
deployment hop costs the request ~3.5 ms and every process on its path CPU (pickling, Serve's
router and request handling), and one separate replica made the whole service run at the pace
of one GIL. Measured with ``scripts/bench_nba.py`` on this project's 2-core machine, 8 clients,
interleaved runs: 32.8 and 33.3 decisions/s with a recommendation deployment behind one gateway,
43.3 and 42.7 with decisions in each of two gateway replicas (about 40 with three). The p50 at
one client did not move (38.5 and 37.6 ms before, 36.9 and 39.3 after): the hop is gone, but
the proxy spreading calls over two replicas made the Echo baseline itself slower (3.9-4.2 ->
4.6-4.8 ms) and each decision's stages too; ``memcrm.services.routing`` now keeps light load
on one replica (37.0 and 33.3 ms).

The methods are async and run the blocking domain calls on long-lived worker threads. A sync
method would run on a worker thread that Ray Serve (through anyio) starts for the request and
stops when it ends: a new thread per decision costs ~4 ms of kernel CPU (page faults of its
fresh stack and allocator arena), measured on this project's machine. Decisions get
``DECISION_THREADS`` threads: in one process, concurrent decisions contend for the GIL and the
caches (CPU per decision measured at 23.4 ms one at a time, 24.6 ms two at a time, 26.5 ms
four, 27-34 ms eight), and two already keep the CPU busy while one waits on PostgreSQL; further
decisions queue here.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from memcrm.core.settings import Settings
from memcrm.core.types import DecisionRecord, DecisionRequest
from memcrm.decisions.replay import Replay
from memcrm.decisions.service import DecisionService
from memcrm.memory.activations import Activation
from memcrm.memory.hot import HotState
from memcrm.memory.store import MemoryStore

if TYPE_CHECKING:
    from memcrm.models.encoder import Encoder
    from memcrm.models.query_encoder import QueryEncoder
    from memcrm.models.registry import ModelEntry

A = TypeVar("A")

# Decisions one process runs at once (see the module's docstring).
DECISION_THREADS = 2
# A thread waiting for the GIL (a decision back from a torch op that released it) asks for it
# after 1 ms instead of Python's 5: measured 24.5 -> 23.5 ms CPU per decision and 4% more
# decisions/s with two deciding threads.
GIL_SWITCH_INTERVAL_S = 0.001


class Recommendations:
    """The async face of a ``DecisionService`` for the gateway."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        redis_url: str,
        encoder: Encoder,
        query_encoder: QueryEncoder,
    ) -> None:
        """``encoder`` (one thread: a decision encodes one short message) and
        ``query_encoder`` are shared with the gateway's memory reads."""
        # Decisions keep a connection pool of their own, so memory reads never starve them.
        store = MemoryStore(database_url, max_size=settings.db_pool_max)
        self._service = DecisionService(
            settings, store, HotState(redis_url), encoder, query_encoder
        )
        self._deciders = ThreadPoolExecutor(DECISION_THREADS, thread_name_prefix="memcrm-decide")
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    async def decide(
        self,
        tenant_id: str,
        request: DecisionRequest,
        trace_id: str,
        carrier: dict[str, str],
        answer: Callable[[DecisionRecord], A],
    ) -> tuple[DecisionRecord, A]:
        """Decide, write the full decision record, and only then answer: the record and
        ``answer(record)``, built while the record is written (0.45 ms for a protobuf
        response of 3 actions explained by 32 memories)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._deciders, self._service.decide, tenant_id, request, trace_id, carrier, answer
        )

    async def replay(
        self, tenant_id: str, recommendation_id: str, carrier: dict[str, str]
    ) -> Replay:
        return await asyncio.to_thread(self._service.replay, tenant_id, recommendation_id, carrier)

    async def models(self, tenant_id: str) -> tuple[list[ModelEntry], str]:
        return await asyncio.to_thread(self._service.models, tenant_id)

    async def activate(self, tenant_id: str, version: str, by: str) -> tuple[Activation, str]:
        return await asyncio.to_thread(self._service.activate, tenant_id, version, by)
