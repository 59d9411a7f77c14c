"""Set-up that runs in every Ray worker process (``worker_process_setup_hook``).

Ray Serve's gRPC proxy binds ``[::]:<port>``; the contract says the local default listens on
127.0.0.1 only and ``MEMCRM_GRPC_HOST`` chooses the interface. This hook makes the proxy bind
the configured host. It patches one private Ray function; the end-to-end test checks the
listening address so a Ray upgrade that breaks it is caught.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def _host_address(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_grpc_to_configured_host() -> None:
    host = os.environ.get("MEMCRM_GRPC_HOST", "127.0.0.1")
    try:
        from ray.serve._private import default_impl
    except ImportError:
        return
    original = default_impl.add_grpc_address
    if getattr(original, "_memcrm", False):
        return

    def add_grpc_address(server: Any, address: str) -> None:
        port = address.rsplit(":", 1)[1]
        original(server, _host_address(host, port))

    add_grpc_address._memcrm = True  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address  # type: ignore[assignment]
