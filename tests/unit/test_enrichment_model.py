"""The shipped enrichment heads: shapes, label sets, determinism, shared embedding, integrity."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from memcrm.models.enrichment import (
    ArtifactError,
    EnrichmentModel,
    default_artifact_dir,
    split_batches,
)
from memcrm.models.enrichment_data import ISSUES, SENTIMENTS, banking77_labels, default_data_dir
from memcrm.models.train_enrichment import train_intents

TEXTS = [
    "My card still hasn't arrived after two weeks, where is it?",
    "@united you lost my bag again and nobody at the desk will help. Worst airline ever",
    "@JetBlue thanks for the great flight, the crew was lovely!",
    "What is the exchange rate for euros?",
    "",
]


@pytest.fixture(scope="module")
def model() -> EnrichmentModel:
    return EnrichmentModel()


def test_output_shapes_and_types(model: EnrichmentModel) -> None:
    batch = model.run(TEXTS)
    n = len(TEXTS)
    assert batch.embeddings.shape == (n, 384)
    assert batch.embeddings.dtype == np.float32
    assert batch.sentiment_score.shape == (n,)
    assert np.all(np.abs(batch.sentiment_score) <= 1.0)
    assert len(batch.sentiment) == len(batch.intents) == len(batch.issue) == n
    for intents in batch.intents:
        assert len(intents) == 3
        confidences = [label.confidence for label in intents]
        assert confidences == sorted(confidences, reverse=True)
        assert all(0.0 <= c <= 1.0 for c in confidences)
    assert batch.model_version == model.version
    assert model.version.startswith("all-MiniLM-L6-v2+enrich-")
    assert "+intents-banking77-" in model.version


def test_empty_batch(model: EnrichmentModel) -> None:
    batch = model.run([])
    assert batch.embeddings.shape == (0, 384)
    assert batch.sentiment == [] and batch.intents == [] and batch.issue == []


def test_label_sets(model: EnrichmentModel) -> None:
    categories = banking77_labels(default_data_dir())
    assert len(categories) == 77
    assert model.intent_labels() == categories
    assert model.sentiment_labels == SENTIMENTS
    assert model.issue_labels == ISSUES
    batch = model.run(TEXTS)
    assert {label.name for label in batch.sentiment} <= set(SENTIMENTS)
    assert {label.name for top in batch.intents for label in top} <= set(categories)
    assert {label.name for label in batch.issue if label is not None} <= set(ISSUES)


def test_plausible_predictions(model: EnrichmentModel) -> None:
    batch = model.run(TEXTS)
    assert batch.intents[0][0].name == "card_arrival"
    assert batch.sentiment[1].name == "negative"
    assert batch.issue[1] is not None
    assert batch.sentiment[2].name == "positive"
    assert batch.sentiment_score[2] > 0 > batch.sentiment_score[1]
    # The issue is only given for complaints.
    for sentiment, issue in zip(batch.sentiment, batch.issue, strict=True):
        assert issue is None or sentiment.name == "negative"


def test_deterministic(model: EnrichmentModel) -> None:
    first = model.run(TEXTS)
    second = model.run(TEXTS)
    assert np.array_equal(first.embeddings, second.embeddings)
    assert first.sentiment == second.sentiment
    assert first.intents == second.intents
    assert first.issue == second.issue
    assert np.array_equal(first.sentiment_score, second.sentiment_score)


def test_batch_composition_does_not_change_results(model: EnrichmentModel) -> None:
    alone = model.run(TEXTS[1:2])
    together = model.run(TEXTS)
    np.testing.assert_allclose(alone.embeddings[0], together.embeddings[1], atol=1e-5)
    assert alone.sentiment[0].name == together.sentiment[1].name


def test_embeddings_equal_encoder(model: EnrichmentModel) -> None:
    batch = model.run(TEXTS)
    expected = model.encoder.encode(TEXTS)
    np.testing.assert_allclose(batch.embeddings, expected, atol=1e-5, rtol=0)


def test_corrupted_artifact_is_refused(model: EnrichmentModel, tmp_path: Path) -> None:
    copy = tmp_path / "artifacts"
    shutil.copytree(default_artifact_dir(), copy)
    weights = copy / "enrich.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        EnrichmentModel(copy, encoder=model.encoder)


def test_corrupted_intent_set_is_refused(model: EnrichmentModel, tmp_path: Path) -> None:
    copy = tmp_path / "artifacts"
    shutil.copytree(default_artifact_dir(), copy)
    weights = copy / "intents-banking77.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="sha256"):
        EnrichmentModel(copy, encoder=model.encoder)


def test_tenant_intent_set(model: EnrichmentModel, tmp_path: Path) -> None:
    rows = {
        "upgrade_plan": [
            "I want to upgrade to the premium plan",
            "How do I move to a bigger subscription?",
            "Can I get more seats on my plan?",
            "Upgrade my account please",
            "What does the enterprise tier cost to switch to?",
            "I'd like the pro plan instead of basic",
        ],
        "cancel_service": [
            "Please cancel my subscription",
            "I want to close my account",
            "How do I stop being billed and leave?",
            "Terminate my contract now",
            "I am done, cancel everything",
            "End my membership today",
        ],
        "report_outage": [
            "Your service is down again",
            "The app won't load, is there an outage?",
            "Nothing works since this morning",
            "Error 503 on every page",
            "The website is not responding",
            "Is the system offline right now?",
        ],
    }
    csv = tmp_path / "tenant.csv"
    lines = ["text,category"]
    for category, texts in rows.items():
        lines += [f'"{text}",{category}' for text in texts]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "intents"
    manifest = train_intents(csv, "acme", out, default_artifact_dir(), seed=0, model=model)
    assert manifest["labels"] == list(rows)
    tenant = EnrichmentModel(intents_dir=out, intent_set="acme", encoder=model.encoder)
    assert "+intents-acme-" in tenant.version
    batch = tenant.run(["cancel my account right away", "the site is down"])
    assert {label.name for top in batch.intents for label in top} <= set(rows)
    assert batch.intents[0][0].name == "cancel_service"
    assert batch.intents[1][0].name == "report_outage"
    # The shipped set is still there, per call.
    shipped = tenant.run(["where is my new card?"], intent_set="banking77")
    assert shipped.intents[0][0].name in banking77_labels(default_data_dir())


@pytest.mark.parametrize(
    ("n", "batch_size", "workers"),
    [(1, 16, 2), (3, 16, 2), (100, 16, 2), (100, 64, 1), (400, 16, 3), (5, 2, 4)],
)
def test_split_covers_every_text_once_in_order_and_feeds_every_worker(
    n: int, batch_size: int, workers: int
) -> None:
    order = list(range(n))[::-1]
    batches = split_batches(order, batch_size, workers)
    assert [i for b in batches for i in b] == order
    assert all(0 < len(b) <= batch_size for b in batches)
    assert len(batches) >= min(workers, n)
    assert max(map(len, batches)) - min(map(len, batches)) <= 1


def test_parallel_forward_passes_give_the_same_outputs(model: EnrichmentModel) -> None:
    threads = torch.get_num_threads()
    try:
        parallel = EnrichmentModel(encoder=model.encoder, workers=2)
        texts = TEXTS * 7
        one, two = model.run(texts), parallel.run(texts)
        np.testing.assert_allclose(two.embeddings, one.embeddings, atol=1e-5)
        assert [s.name for s in two.sentiment] == [s.name for s in one.sentiment]
        assert [i[0].name for i in two.intents] == [i[0].name for i in one.intents]
        again = parallel.run(texts)
        assert np.array_equal(again.embeddings, two.embeddings), "deterministic"
    finally:
        torch.set_num_threads(threads)
