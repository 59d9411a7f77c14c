"""ModelService over real gRPC: a registered version is activated for one tenant without a
restart, responses name it, an earlier decision still replays, and only admins may switch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.store import MemoryStore
from memcrm.models.registry import ModelRegistry
from memcrm.models.train_outcomes import FineTune, train_from_outcomes
from memcrm.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)
from tests.e2e.conftest import KEY_DEMO, KEY_OTHER, KEY_READER, auth, history
from tests.unit.test_model_registry import perturbed_artifact

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def registered(model_registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    trained = tmp_path_factory.mktemp("trained")
    perturbed_artifact(trained, seed=7)
    return ModelRegistry(model_registry_dir).register(trained).version


@pytest.fixture
def models(channel: grpc.Channel) -> Iterator[models_pb2_grpc.ModelServiceStub]:
    stub = models_pb2_grpc.ModelServiceStub(channel)
    default = stub.ListModels(models_pb2.ListModelsRequest(), metadata=auth(KEY_DEMO)).models[0]
    yield stub
    # Other tests expect the default model: put it back.
    stub.ActivateModel(
        models_pb2.ActivateModelRequest(version=default.version), metadata=auth(KEY_DEMO)
    )


def test_activating_a_version_switches_the_tenant_without_a_restart(
    channel: grpc.Channel, models: models_pb2_grpc.ModelServiceStub, registered: str
) -> None:
    listed = models.ListModels(models_pb2.ListModelsRequest(), metadata=auth(KEY_DEMO))
    default = listed.models[0]
    assert default.default and listed.active_version == default.version
    assert [m.version for m in listed.models] == [default.version, registered]
    assert "test fixture" in listed.models[1].training_data_json

    customer = f"mdl-{uuid.uuid4().hex[:8]}"
    ingestion_pb2_grpc.IngestionServiceStub(channel).IngestBatch(
        ingestion_pb2.IngestBatchRequest(
            interactions=history(
                customer,
                ["My bag never arrived", "Still no bag after three days"],
                channel=common_pb2.CHANNEL_EMAIL,
                first=NOW - timedelta(days=2),
                every=timedelta(days=1),
            )
        ),
        metadata=auth(KEY_DEMO),
    )
    recommend = recommendation_pb2_grpc.RecommendationServiceStub(channel)
    ask = recommendation_pb2.NextBestActionRequest(customer_id=customer, context="any news?")
    before = recommend.NextBestAction(ask, metadata=auth(KEY_DEMO))
    assert before.model_version == default.version

    switched = models.ActivateModel(
        models_pb2.ActivateModelRequest(version=registered), metadata=auth(KEY_DEMO)
    )
    assert (switched.version, switched.previous_version) == (registered, default.version)
    after = recommend.NextBestAction(ask, metadata=auth(KEY_DEMO))
    assert after.model_version == registered
    # The service runs several gateway replicas (the fixture's default): the activation made
    # through one serves the very next decisions on every one of them.
    following = [recommend.NextBestAction(ask, metadata=auth(KEY_DEMO)) for _ in range(6)]
    assert {r.model_version for r in following} == {registered}
    assert [a.propensity for a in after.actions] != [a.propensity for a in before.actions]
    other = recommend.NextBestAction(
        recommendation_pb2.NextBestActionRequest(customer_id=customer, context="any news?"),
        metadata=auth(KEY_OTHER),
    )
    assert other.model_version == default.version, "another tenant keeps its model"

    audit = audit_pb2_grpc.AuditServiceStub(channel)
    for decision in (before, after):
        replay = audit.ReplayRecommendation(
            audit_pb2.ReplayRecommendationRequest(recommendation_id=decision.recommendation_id),
            metadata=auth(KEY_DEMO),
        )
        assert (replay.identical, replay.diff) == (True, ""), "each with its own model version"


def test_only_admins_switch_and_unknown_versions_are_not_found(
    channel: grpc.Channel, models: models_pb2_grpc.ModelServiceStub
) -> None:
    for key in (KEY_READER, KEY_OTHER):
        with pytest.raises(grpc.RpcError) as err:
            models.ActivateModel(
                models_pb2.ActivateModelRequest(version="nba-x"), metadata=auth(key)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        models.ActivateModel(
            models_pb2.ActivateModelRequest(version="nba-nope"), metadata=auth(KEY_DEMO)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        models.ActivateModel(models_pb2.ActivateModelRequest(), metadata=auth(KEY_DEMO))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version" in (err.value.details() or "")


def test_recorded_outcomes_train_a_version_that_serves_after_activation(
    channel: grpc.Channel,
    models: models_pb2_grpc.ModelServiceStub,
    stores: EmbeddedStores,
    model_registry_dir: Path,
    tmp_path: Path,
) -> None:
    recommend = recommendation_pb2_grpc.RecommendationServiceStub(channel)
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channel)
    recorded = 0
    for _ in range(6):
        customer = f"fb-{uuid.uuid4().hex[:8]}"
        ingest.IngestBatch(
            ingestion_pb2.IngestBatchRequest(
                interactions=history(
                    customer,
                    ["My bag never arrived in Denver", "Still no news about my suitcase"],
                    channel=common_pb2.CHANNEL_EMAIL,
                    first=NOW - timedelta(days=3),
                    every=timedelta(days=1),
                )
            ),
            metadata=auth(KEY_DEMO),
        )
        decided = recommend.NextBestAction(
            recommendation_pb2.NextBestActionRequest(customer_id=customer, context="any news?"),
            metadata=auth(KEY_DEMO),
        )
        for rank, action in enumerate(decided.actions):
            recommend.RecordOutcome(
                recommendation_pb2.RecordOutcomeRequest(
                    recommendation_id=decided.recommendation_id,
                    action_id=action.action_id,
                    outcome=(
                        recommendation_pb2.OUTCOME_CONVERTED
                        if rank == 0
                        else recommendation_pb2.OUTCOME_REJECTED
                    ),
                ),
                metadata=auth(KEY_DEMO),
            )
            recorded += 1

    store = MemoryStore(stores.database_url)
    try:
        manifest = train_from_outcomes(
            store,
            ModelRegistry(model_registry_dir),
            "demo",
            tmp_path / "nba",
            cfg=FineTune(epochs=3),
        )
    finally:
        store.close()
    assert manifest["training_data"]["outcomes"] >= recorded, "every recorded outcome is used"
    assert manifest["training_data"]["tenant"] == "demo"

    listed = models.ListModels(models_pb2.ListModelsRequest(), metadata=auth(KEY_DEMO))
    assert manifest["version"] in [m.version for m in listed.models]
    models.ActivateModel(
        models_pb2.ActivateModelRequest(version=manifest["version"]), metadata=auth(KEY_DEMO)
    )
    served = recommend.NextBestAction(
        recommendation_pb2.NextBestActionRequest(customer_id="fb-anyone", context="any news?"),
        metadata=auth(KEY_DEMO),
    )
    assert served.model_version == manifest["version"]
