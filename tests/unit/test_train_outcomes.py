"""Fine-tuning on recorded outcomes: deterministic, moves towards the outcomes, keeps lineage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from memcrm.core.types import EMBEDDING_DIM
from memcrm.decisions.feedback import OutcomeExample
from memcrm.models.nba import MemoryFeatures, NbaScorer
from memcrm.models.train_outcomes import FineTune, fine_tune, write_fine_tuned

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def examples(n: int, action: str, success: bool, seed: int) -> list[OutcomeExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = int(rng.integers(1, 6))
        vectors = rng.normal(size=(m, EMBEDDING_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        memories = MemoryFeatures(
            embeddings=vectors,
            ages_days=rng.uniform(0, 60, m),
            channels=rng.integers(1, 5, m),
            directions=np.ones(m, dtype=np.int64),
        )
        out.append(
            OutcomeExample(f"r-{seed}-{i}", action, success, T0, memories, vectors[0], "nba-x")
        )
    return out


@pytest.fixture(scope="module")
def base() -> NbaScorer:
    return NbaScorer()


def test_fine_tuning_is_deterministic_and_follows_the_outcomes(base: NbaScorer) -> None:
    data = examples(40, "loyalty_thanks", True, 1) + examples(40, "seat_upgrade_offer", False, 2)
    cfg = FineTune(epochs=5)
    first, metrics = fine_tune(base, data, cfg)
    again, _ = fine_tune(base, data, cfg)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    probe = examples(20, "loyalty_thanks", True, 3)
    column = {a: i for i, a in enumerate(base.action_ids)}
    before = np.mean([base.logits(e.memories, e.context)[column["loyalty_thanks"]] for e in probe])
    with torch.inference_mode():
        after = np.mean(
            [
                first.double()(
                    torch.from_numpy(e.memories.embeddings).double().unsqueeze(0),
                    torch.from_numpy(e.memories.ages_days).unsqueeze(0),
                    torch.from_numpy(e.memories.channels).unsqueeze(0),
                    torch.from_numpy(e.memories.directions).unsqueeze(0),
                    torch.ones((1, len(e.memories)), dtype=torch.bool),
                    torch.from_numpy(np.asarray(e.context)).double().unsqueeze(0),
                    torch.ones(1, dtype=torch.bool),
                )[0, column["loyalty_thanks"]].item()
                for e in probe
            ]
        )
    assert after > before, "all-success outcomes raise the action's log-odds"
    held = metrics["held_out"]
    assert isinstance(held, dict) and held["fine_tuned"]["log_loss"] < held["base"]["log_loss"]


def test_the_artifact_names_its_lineage_and_data(base: NbaScorer, tmp_path: Path) -> None:
    data = examples(12, "baggage_trace", True, 4) + examples(12, "baggage_trace", False, 5)
    net, metrics = fine_tune(base, data, FineTune(epochs=2))
    manifest = write_fine_tuned(base, net, metrics, data, "demo", tmp_path)
    loaded = NbaScorer(tmp_path)
    assert loaded.version == manifest["version"] and loaded.version.startswith("nba-demo-outcomes-")
    assert manifest["fine_tuned_from"] == {"version": base.version, "sha256": base.sha256}
    assert manifest["training_data"]["outcomes"] == 24
    assert manifest["training_data"]["successes"] == 12
    with pytest.raises(ValueError, match="no recorded outcomes"):
        fine_tune(base, [])
    with pytest.raises(ValueError, match="cannot score actions"):
        fine_tune(base, examples(2, "free_pizza", True, 6))
