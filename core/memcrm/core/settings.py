"""Typed settings: environment variables with the ``MEMCRM_`` prefix.

Bad values fail at start-up with a message naming the variable (``load_settings``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memcrm.core.errors import ConfigError

CpuFraction = Annotated[float, Field(gt=0.0, le=8.0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMCRM_", extra="forbid", frozen=True)

    # Where the embedded PostgreSQL and Redis keep their data; survives restarts.
    home: Path = Path(".memcrm")
    # External stores; unset means start the embedded ones under ``home``.
    database_url: str | None = None
    redis_url: str | None = None

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=1, le=65535)
    # Ray Serve's HTTP proxy: health (/-/healthz) only; memcrm's API is gRPC.
    http_port: int = Field(default=8000, ge=1, le=65535)

    # API keys: a YAML/JSON file, or the same document inline (see memcrm.core.auth).
    api_keys_file: Path | None = None
    api_keys: str | None = None

    # Tenant configuration: one YAML file per tenant, <tenant>.yaml (see memcrm.core.tenants).
    tenants_dir: Path | None = None
    # Intent heads trained for tenants (`train_enrichment intents --out DIR`), beside the shipped.
    intents_dir: Path | None = None

    # Where the public data sets live (training and demos); users may point at their own.
    data_dir: Path = Path("../shared/data")
    # Folder holding the next-best-action model (nba.pt + nba.json); unset: the shipped one.
    nba_model_dir: Path | None = None
    # Registered next-best-action model versions, one <version>/ folder each
    # (memcrm.models.registry); tenants are served the default model (above) until an admin
    # activates another (ModelService.ActivateModel).
    model_registry_dir: Path | None = None
    # Tenant action catalogs, one <tenant>.yaml each (memcrm.decisions.tenant_catalog); tenants
    # without a file get the built-in airline catalog. Re-read every catalog_reload_s seconds
    # when a file changed (0: only at start-up); a file that fails validation is refused and
    # its tenant keeps the catalog it had.
    catalogs_dir: Path | None = None
    catalog_reload_s: float = Field(default=10.0, ge=0.0, le=86_400.0)

    # Ray Serve: CPU fraction and replica count of each deployment (fits a 2-core machine).
    # The gateway is the gRPC ingress and serves every RPC but ingestion itself, decisions
    # included (no deployment hop on the latency-critical paths); most of a decision is Python
    # under one GIL, so one process runs at about one core and two replicas use two cores
    # (memcrm.services.recommendations has the figures). Ingestion is a deployment of its own.
    gateway_num_cpus: CpuFraction = 0.4
    ingestion_num_cpus: CpuFraction = 0.5
    gateway_replicas: int = Field(default=2, ge=1, le=64)
    ingestion_replicas: int = Field(default=1, ge=1, le=64)
    # Ray Serve's throughput-optimised request path (RAY_SERVE_THROUGHPUT_OPTIMIZED): user code
    # on each replica's main event loop instead of a thread of its own, routers on the caller's
    # loop, gRPC between proxy and replicas, buffered request logs. Measured with
    # scripts/bench_nba.py, interleaved runs on this project's machine: NextBestAction p50
    # 34.5/35.9 -> 31.4/33.3 ms, 48.4/47.3 -> 52.0/50.8 decisions/s, Echo p50 4.1/5.5 -> 3.6/3.6.
    serve_throughput_optimized: bool = True
    # Encoder passes an ingestion replica runs at once, each on one torch thread. Parallel
    # passes keep going when another process takes a core; one pass over several intra-op
    # threads stalls at every barrier (scripts/bench_ingest_throughput.py measures it).
    ingestion_encoder_workers: int = Field(default=2, ge=1, le=64)
    # Arithmetic of the recall/search query encoder (memcrm.models.query_encoder): bfloat16
    # halves its latency on CPUs that compute it natively; "auto" uses it where they do.
    query_encoder_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # Arithmetic of the propensity model and its SHAP game (memcrm.models.nba), recorded with
    # every decision: float32 halves the cost of the game's ~670 coalitions; float64 is what
    # decisions were scored in before the precision was recorded.
    scoring_precision: Literal["float32", "float64"] = "float32"

    db_pool_max: int = Field(default=8, ge=1, le=256)
    # Memories a decision looks at.
    decision_memories: int = Field(default=32, ge=1, le=100)

    # Predictions (churn_risk, purchase_propensity, support_need; memcrm.decisions.predictions)
    # read a customer's most recent signals_memories memories. Folder of the signals model
    # (signals.pt + signals.json); unset: the shipped one.
    signals_memories: int = Field(default=32, ge=1, le=100)
    signals_model_dir: Path | None = None
    # WatchSignals: open streams one gateway replica serves at once (each holds one of its
    # request slots; more get RESOURCE_EXHAUSTED), and the events each tenant's stream keeps
    # for clients resuming after a disconnect (Redis, approximate trimming).
    signals_max_watchers: int = Field(default=8, ge=1, le=1000)
    # A stream ends (status OK) after this long; the client reconnects with `after` set to the
    # last event_id it saw. It bounds how long a slot stays taken by a client that vanished
    # without its cancellation reaching the replica.
    signals_stream_max_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    signals_stream_maxlen: int = Field(default=100_000, ge=100, le=10_000_000)

    @field_validator("database_url", "redis_url", "api_keys", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None


# Read by the command-line client, not by the server.
CLIENT_VARIABLES = frozenset({"MEMCRM_ADDRESS", "MEMCRM_API_KEY"})


def load_settings() -> Settings:
    """Read the environment; a bad value or an unknown MEMCRM_ variable raises ConfigError."""
    known = {f"MEMCRM_{name.upper()}" for name in Settings.model_fields} | CLIENT_VARIABLES
    unknown = sorted(k for k in os.environ if k.startswith("MEMCRM_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; known: {sorted(known)}")
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MEMCRM_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
