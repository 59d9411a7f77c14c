"""Start memcrm: the embedded stores (unless URLs are given), migrations, Ray and Serve.

``memcrm serve`` (and ``make run``) call ``main``; tests use ``ServeRuntime`` directly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

import grpc

from memcrm.core.auth import DEV_KEY, DEV_TENANT
from memcrm.core.errors import ConfigError, MemcrmError
from memcrm.core.settings import Settings, load_settings
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.migrate import migrate

log = logging.getLogger("memcrm")

# Environment that Ray workers must see exactly as this process does.
_FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_LOG_TO_STDERR",
)
_FORWARDED_PREFIXES = ("MEMCRM_", "OTEL_", "MALLOC_")

# A decision allocates arrays of a few hundred KB to a few MB (the SHAP game's coalitions and the
# scoring head's activations). By default glibc serves those with fresh mmaps, or trims them off
# the heap once freed, so every decision faults its pages in again. Keeping freed memory for
# reuse (allocations up to 32 MB come from the heap; the heap is trimmed only past 256 MB free),
# measured with scripts/bench_nba.py, interleaved runs on this project's machine: gateway minor
# page faults per decision 417/368 -> 66/134, its system CPU 2.7 -> 1.9-2.1 ms per decision, NBA
# p50 34.7/32.9 -> 30.2/30.2 ms, 43.7/49.5 -> 53.7/53.9 decisions/s. Set by ``memcrm serve``
# unless already in its environment.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "268435456"}


class ServeRuntime:
    """Ray plus the Serve application behind the gRPC proxy, on already running stores."""

    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url

    @property
    def address(self) -> str:
        host = self.settings.grpc_host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.settings.grpc_port}"

    def start(self) -> None:
        import ray
        from ray import serve
        from ray.serve.config import gRPCOptions

        from memcrm.services.app import APP_NAME, SERVICER_FUNCTIONS, build_app

        # Read by Serve when its modules load in each process: the proxy, the controller and
        # the replicas are started after this and inherit it (and get it in runtime_env).
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = (
            "1" if self.settings.serve_throughput_optimized else "0"
        )
        # That mode also stops Serve logging to stderr; keep it (access logs stay off, so this
        # is warnings and errors, not a line per request).
        os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "1")
        # glibc malloc, read when each Ray process starts (see MALLOC_TUNING).
        for name, value in MALLOC_TUNING.items():
            os.environ.setdefault(name, value)
        env = {k: v for k, v in os.environ.items() if k in _FORWARDED_ENV}
        env.update({k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES)})
        env["MEMCRM_GRPC_HOST"] = self.settings.grpc_host
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        ray.init(
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            runtime_env={
                "env_vars": env,
                "worker_process_setup_hook": (
                    "memcrm.services.raysetup.bind_grpc_to_configured_host"
                ),
            },
        )
        quiet = {"enable_access_log": False, "log_level": "WARNING"}
        serve.start(
            logging_config=quiet,
            http_options={"host": self.settings.grpc_host, "port": self.settings.http_port},
            grpc_options=gRPCOptions(
                port=self.settings.grpc_port, grpc_servicer_functions=SERVICER_FUNCTIONS
            ),
        )
        app = build_app(self.settings, self.database_url, self.redis_url)
        # gRPC routing needs the application in the proxy's route table: a route prefix.
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=quiet)
        self._wait_for_proxy()

    def _wait_for_proxy(self, timeout_s: float = 120.0) -> None:
        """Serve's own health RPC answers once the proxy routes to the application."""
        deadline = time.monotonic() + timeout_s
        healthz = "/ray.serve.RayServeAPIService/Healthz"
        with grpc.insecure_channel(self.address) as channel:
            call = channel.unary_unary(healthz, lambda b: b, lambda b: b)
            while True:
                try:
                    call(b"", timeout=2)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise ConfigError(
                            f"the gRPC proxy did not come up on {self.address}"
                        ) from None
                    time.sleep(0.25)

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.monotonic()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"memcrm: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def handle_signals() -> None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    handle_signals()
    try:
        with EmbeddedStores(settings.home, settings.database_url, settings.redis_url) as stores:
            applied = migrate(stores.database_url)
            if applied:
                log.info("applied schema migrations %s", applied)
            runtime = ServeRuntime(settings, stores.database_url, stores.redis_url)
            try:
                runtime.start()
                # ray.init installs handlers that abort the process on SIGTERM; take them back
                # so Ctrl-C and SIGTERM stop Serve, Ray and both stores cleanly.
                handle_signals()
                if stop.is_set():
                    return
                ready_s = time.monotonic() - started
                keys = (
                    "configured keys"
                    if settings.api_keys or settings.api_keys_file
                    else (f"dev key {DEV_KEY!r} for tenant {DEV_TENANT!r}")
                )
                print(
                    f"memcrm ready in {ready_s:.1f}s: gRPC on {runtime.address}, {keys}. "
                    "Ctrl-C stops.",
                    flush=True,
                )
                stop.wait()
                print("memcrm: stopping", flush=True)
            finally:
                runtime.stop()
    except MemcrmError as exc:
        print(f"memcrm: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
