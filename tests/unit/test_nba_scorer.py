"""The shipped propensity model: verified loading, set semantics and batched coalitions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memcrm.core.settings import Settings
from memcrm.core.types import EMBEDDING_DIM, Channel, Direction
from memcrm.decisions.catalog import BUILTIN_CATALOG, Action
from memcrm.models.nba import (
    DEFAULT_SCORING_PRECISION,
    ArtifactIntegrityError,
    MemoryFeatures,
    NbaScorer,
    default_artifact_dir,
    file_sha256,
)
from memcrm.models.nba_net import ENRICHMENT_FEATURES, fast_asinh


@pytest.fixture(scope="module")
def scorer() -> NbaScorer:
    return NbaScorer()


def memories(n: int, seed: int = 0) -> MemoryFeatures:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return MemoryFeatures(
        embeddings=vectors,
        ages_days=rng.uniform(0, 120, size=n),
        channels=rng.choice([int(c) for c in Channel], size=n).astype(np.int64),
        directions=rng.choice([int(d) for d in Direction], size=n).astype(np.int64),
    )


def unit(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    v = np.random.default_rng(seed).normal(size=EMBEDDING_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_manifest_describes_the_artifact(scorer: NbaScorer) -> None:
    manifest = scorer.manifest
    assert scorer.version.startswith("nba-airline-")
    assert scorer.version.endswith(scorer.sha256[:8])
    assert scorer.sha256 == file_sha256(default_artifact_dir() / "nba.pt")
    assert (default_artifact_dir() / "nba.pt").stat().st_size < 2 * 1024 * 1024
    assert scorer.catalog == BUILTIN_CATALOG
    assert manifest["encoder"] == "all-MiniLM-L6-v2"
    for key in ("seed", "hyperparameters", "training_data", "metrics"):
        assert manifest[key]
    held_out = manifest["metrics"]["held_out"]
    assert 0.5 < held_out["roc_auc"] <= held_out["roc_auc_oracle_true_probabilities"] + 0.01
    # The shipped model reads each memory's enrichment features, as its manifest declares.
    assert manifest["enrichment"]["features"] == list(ENRICHMENT_FEATURES)
    assert scorer.enrichment_spec is not None and scorer.net.enrichment_proj is not None
    assert manifest["training_data"]["enrichment"]["tweets_enriched"] > 0


def test_corrupted_weights_are_refused(tmp_path: Path) -> None:
    shutil.copy(default_artifact_dir() / "nba.json", tmp_path / "nba.json")
    data = bytearray((default_artifact_dir() / "nba.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "nba.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        NbaScorer(tmp_path)


def test_missing_artifact_and_foreign_catalog_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactIntegrityError, match="not found"):
        NbaScorer(tmp_path)
    renamed = (
        Action("other", "Other", "Something else.", frozenset({Channel.EMAIL}), 1.0),
        *BUILTIN_CATALOG[1:],
    )
    with pytest.raises(ArtifactIntegrityError, match="trained for actions"):
        NbaScorer(catalog=renamed)
    manifest = json.loads((default_artifact_dir() / "nba.json").read_text())
    manifest["catalog_fingerprint"] = "0" * 64
    shutil.copy(default_artifact_dir() / "nba.pt", tmp_path / "nba.pt")
    (tmp_path / "nba.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="retrain"):
        NbaScorer(tmp_path)


def test_empty_memory_set_is_well_defined(scorer: NbaScorer) -> None:
    logits = scorer.logits(MemoryFeatures.empty(), None)
    assert logits.shape == (len(BUILTIN_CATALOG),)
    assert np.all(np.isfinite(logits))
    # Masking every memory out is the same as having none.
    masked = scorer.score_coalitions(memories(5), None, np.zeros((1, 6), dtype=bool))[0]
    np.testing.assert_allclose(masked, logits, atol=1e-12)
    batched = scorer.forward_batch(
        np.zeros((2, 0, EMBEDDING_DIM), np.float32),
        np.zeros((2, 0)),
        np.zeros((2, 0), np.int64),
        np.zeros((2, 0), np.int64),
        np.zeros((2, 0), bool),
        np.zeros((2, EMBEDDING_DIM), np.float32),
        np.zeros(2, bool),
    )
    np.testing.assert_allclose(batched, np.stack([logits, logits]), atol=1e-12)


def test_masking_a_memory_equals_removing_it(scorer: NbaScorer) -> None:
    full = memories(6, seed=1)
    context = unit(2)
    keep = np.array([True, False, True, True, False, True])
    reduced = MemoryFeatures(
        embeddings=full.embeddings[keep],
        ages_days=full.ages_days[keep],
        channels=full.channels[keep],
        directions=full.directions[keep],
    )
    coalition = np.append(keep, True)[None, :]
    np.testing.assert_allclose(
        scorer.score_coalitions(full, context, coalition)[0],
        scorer.logits(reduced, context),
        atol=1e-10,
    )


def test_batched_forward_matches_the_coalition_path(scorer: NbaScorer) -> None:
    rng = np.random.default_rng(4)
    mem = memories(7, seed=3)
    context = unit(5)
    coalitions = rng.random((50, 8)) < 0.5
    via_coalitions = scorer.score_coalitions(mem, context, coalitions)
    batch = len(coalitions)
    via_forward = scorer.forward_batch(
        np.broadcast_to(mem.embeddings, (batch, 7, EMBEDDING_DIM)),
        np.broadcast_to(mem.ages_days, (batch, 7)),
        np.broadcast_to(mem.channels, (batch, 7)),
        np.broadcast_to(mem.directions, (batch, 7)),
        coalitions[:, :7],
        np.broadcast_to(context, (batch, EMBEDDING_DIM)),
        coalitions[:, 7],
    )
    assert via_forward.shape == (batch, len(BUILTIN_CATALOG))
    np.testing.assert_allclose(via_forward, via_coalitions, atol=1e-9)
    # A coalition's output does not depend on which other coalitions share the forward pass
    # (beyond float64 rounding).
    np.testing.assert_allclose(
        scorer.score_coalitions(mem, context, coalitions[:3]), via_coalitions[:3], atol=1e-12
    )


def test_scoring_is_deterministic_and_context_matters(scorer: NbaScorer) -> None:
    mem = memories(4, seed=8)
    a = scorer.logits(mem, unit(1))
    b = NbaScorer().logits(mem, unit(1))
    assert np.array_equal(a, b)
    assert not np.allclose(scorer.logits(mem, None), a)


def test_scoring_a_subset_of_actions_matches_the_full_head(scorer: NbaScorer) -> None:
    mem = memories(5, seed=6)
    prepared = scorer.prepare(mem, unit(7))
    coalitions = np.random.default_rng(8).random((20, 6)) < 0.5
    full = prepared.logits(coalitions)
    np.testing.assert_allclose(prepared.logits(coalitions, [4, 1]), full[:, [4, 1]], atol=1e-12)


def test_each_scoring_precision_scores_the_same_model(scorer: NbaScorer) -> None:
    import torch

    mem = memories(6, seed=9)
    coalitions = np.random.default_rng(10).random((40, 7)) < 0.5
    double = scorer.prepare(mem, unit(3))
    single = scorer.prepare(mem, unit(3), precision="float32")
    assert (double.dtype, single.dtype) == (torch.float64, torch.float32)
    a, b = double.logits(coalitions), single.logits(coalitions)
    assert a.dtype == b.dtype == np.float64
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert not np.array_equal(a, b)
    # Equal inputs, equal numbers, in either precision.
    assert np.array_equal(single.logits(coalitions), b)
    ends = single.ends()
    assert np.array_equal(ends, single.logits(np.stack([np.zeros(7, bool), np.ones(7, bool)])))
    with pytest.raises(ValueError, match="precision"):
        scorer.prepare(mem, unit(3), precision="float16")  # type: ignore[arg-type]
    # The setting's default (core cannot import the models) is the models' default.
    assert Settings().scoring_precision == DEFAULT_SCORING_PRECISION


def test_fast_asinh_is_asinh() -> None:
    """The serving head's asinh equals torch's to a few units in the last place, sign, zero and
    large values included."""
    import torch

    x = torch.cat(
        [
            torch.tensor(
                [0.0, -0.0, 1e-300, -1e-12, 1e-8, 0.5, -3.0, 1e6, -1e300], dtype=torch.float64
            ),
            torch.from_numpy(np.random.default_rng(3).normal(scale=5.0, size=10_000)),
        ]
    )
    got, want = fast_asinh(x), torch.asinh(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=4e-16, atol=0.0)
    assert torch.equal(torch.signbit(got), torch.signbit(want))
