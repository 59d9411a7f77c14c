"""The memcrm Ray Serve application: a gateway ingress (which also serves memory reads) and
two independently scaled backends, ingestion and recommendation."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from memcrm.core.settings import Settings
from memcrm.services.backends import IngestionDeployment, RecommendationDeployment
from memcrm.services.gateway import Gateway

APP_NAME = "memcrm"

# Every API v1 service the gateway implements; the proxy registers exactly these.
SERVICER_FUNCTIONS = [
    "memcrm.v1.ingestion_pb2_grpc.add_IngestionServiceServicer_to_server",
    "memcrm.v1.memory_pb2_grpc.add_MemoryServiceServicer_to_server",
    "memcrm.v1.recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server",
    "memcrm.v1.audit_pb2_grpc.add_AuditServiceServicer_to_server",
    "memcrm.v1.diagnostics_pb2_grpc.add_DiagnosticsServiceServicer_to_server",
    "memcrm.v1.models_pb2_grpc.add_ModelServiceServicer_to_server",
    "memcrm.v1.signals_pb2_grpc.add_SignalServiceServicer_to_server",
]


def _deployment(cls: type[Any], name: str, num_cpus: float, replicas: int) -> Any:
    return serve.deployment(
        cls,
        name=name,
        ray_actor_options={"num_cpus": num_cpus},
        num_replicas=replicas,
        max_ongoing_requests=32,
    )


def build_app(settings: Settings, database_url: str, redis_url: str) -> Application:
    s = settings
    stores = (settings, database_url, redis_url)
    ingestion = _deployment(
        IngestionDeployment, "ingestion", s.ingestion_num_cpus, s.ingestion_replicas
    ).bind(*stores)
    recommendation = _deployment(
        RecommendationDeployment,
        "recommendation",
        s.recommendation_num_cpus,
        s.recommendation_replicas,
    ).bind(*stores)
    gateway = _deployment(Gateway, "gateway", s.gateway_num_cpus, s.gateway_replicas)
    app: Application = gateway.bind(*stores, ingestion, recommendation)
    return app
