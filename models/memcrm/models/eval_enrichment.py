"""Score the shipped enrichment model beside a TF-IDF + logistic-regression baseline.

    python -m memcrm.models.eval_enrichment [--data-dir DIR] [--artifact-dir DIR]

Prints one JSON document ``{"tasks": {...}, "model_version": ...}``. Each task is one function
``(context) -> dict`` in ``TASKS``; adding a task is one line there. The baseline is trained and
scored in the same run on the same splits as the model (see ``enrichment_data`` for the split
rules), so the comparison cannot drift.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from memcrm.models.enrichment import EnrichmentBatch, EnrichmentModel
from memcrm.models.enrichment_data import (
    Airline,
    Banking77,
    TextSet,
    default_data_dir,
    labelled_only,
    load_airline,
    load_banking77,
)

MARGIN = 0.02  # every task must beat its baseline by this much
TARGETS = {"banking77_intent": 0.92, "airline_sentiment": 0.82}


@dataclass
class Context:
    """Lazily loaded data and model, shared by the task functions."""

    data_dir: Path
    artifact_dir: Path | None = None
    _runs: dict[tuple[str, ...], EnrichmentBatch] = field(default_factory=dict)

    @cached_property
    def model(self) -> EnrichmentModel:
        return EnrichmentModel(self.artifact_dir)

    @cached_property
    def banking77(self) -> Banking77:
        return load_banking77(self.data_dir)

    @cached_property
    def airline(self) -> Airline:
        return load_airline(self.data_dir)

    def run(self, texts: tuple[str, ...]) -> EnrichmentBatch:
        if texts not in self._runs:
            self._runs[texts] = self.model.run(texts)
        return self._runs[texts]


def scores(y_true: Sequence[int] | NDArray[np.int64], y_pred: Sequence[int]) -> dict[str, float]:
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    return {
        "accuracy": round(float((true == pred).mean()), 4),
        "macro_f1": round(float(f1_score(true, pred, average="macro")), 4),
    }


def baseline(train: TextSet, test: TextSet) -> dict[str, float]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, fitted on ``train``."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(train.texts)
    classifier = LogisticRegression(max_iter=2000, C=10.0)
    classifier.fit(x_train, train.y)
    return scores(test.y, [int(p) for p in classifier.predict(vectorizer.transform(test.texts))])


def compare(
    name: str, model: dict[str, float], base: dict[str, float], n: int, n_train: int
) -> dict[str, Any]:
    beats = all(model[k] >= base[k] + MARGIN for k in ("accuracy", "macro_f1"))
    target = TARGETS.get(name)
    meets = beats and (target is None or model["accuracy"] >= target)
    result: dict[str, Any] = {
        "n_test": n,
        "n_train": n_train,
        "model": model,
        "baseline_tfidf_lr": base,
        "target_accuracy": target,
        "required_margin_over_baseline": MARGIN,
        "meets_target": meets,
    }
    return result


def banking77_intent(ctx: Context) -> dict[str, Any]:
    """77 intents on the official Banking77 test split; the baseline sees train + validation."""
    data = ctx.banking77
    labels = ctx.model.intent_labels("banking77")
    index = {name: i for i, name in enumerate(labels)}
    batch = ctx.run(data.test.texts)
    predicted = [index[top[0].name] for top in batch.intents]
    full_train = TextSet(
        data.train.texts + data.val.texts, np.concatenate([data.train.y, data.val.y]), labels
    )
    return compare(
        "banking77_intent",
        scores(data.test.y, predicted),
        baseline(full_train, data.test),
        len(data.test.texts),
        len(full_train.texts),
    )


def _airline_train(air: Airline, issue: bool) -> TextSet:
    """Baseline training data: every non-held-out tweet (train + validation)."""
    train = air.train_issue if issue else air.train_sentiment
    val = air.val_issue if issue else air.val_sentiment
    joined = TextSet(train.texts + val.texts, np.concatenate([train.y, val.y]), train.labels)
    return labelled_only(joined) if issue else joined


def airline_sentiment(ctx: Context) -> dict[str, Any]:
    """negative / neutral / positive on the held-out 20 % of tweets."""
    held = ctx.airline.held_sentiment
    batch = ctx.run(held.texts)
    labels = held.labels
    predicted = [labels.index(label.name) for label in batch.sentiment]
    train = _airline_train(ctx.airline, issue=False)
    return compare(
        "airline_sentiment",
        scores(held.y, predicted),
        baseline(train, held),
        len(held.texts),
        len(train.texts),
    )


def airline_issue(ctx: Context) -> dict[str, Any]:
    """The issue head's top label over held-out negative tweets that carry a reason.

    This scores the head itself, not ``run``'s gated ``issue`` (which is None for texts the
    sentiment head does not call negative or when the issue confidence is low).
    """
    model = ctx.model
    held = labelled_only(ctx.airline.held_issue)
    _, pooled = model.features(list(held.texts))
    probabilities = model.issue_probabilities(pooled)
    predicted = [int(i) for i in probabilities.argmax(1)]
    train = _airline_train(ctx.airline, issue=True)
    return compare(
        "airline_issue",
        scores(held.y, predicted),
        baseline(train, held),
        len(held.texts),
        len(train.texts),
    )


def objections(ctx: Context) -> dict[str, Any]:
    """The shipped objection set on the test half of our labelled set (tests/data)."""
    from memcrm.interpret.objections import evaluate

    result = evaluate(lambda texts: ctx.run(tuple(texts)).embeddings)
    model = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    return compare("objections", model, result["baseline"], result["n_test"], result["n_dev"])


TASKS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("banking77_intent", banking77_intent),
    ("airline_sentiment", airline_sentiment),
    ("airline_issue", airline_issue),
    ("objections", objections),
]


def throughput(ctx: Context, n: int = 512, repeats: int = 3) -> dict[str, Any]:
    """Sentences/s of ``run`` vs bare ``Encoder.encode`` on the same airline texts, same process.

    Best of ``repeats`` alternating runs after a warm-up, so neither side pays first-call costs.
    """
    import time

    texts = list(ctx.airline.held_sentiment.texts[:n])
    model = ctx.model
    model.run(texts[:64])
    model.encoder.encode(texts[:64])
    best_run = best_encode = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.encoder.encode(texts)
        best_encode = min(best_encode, time.perf_counter() - start)
        start = time.perf_counter()
        model.run(texts)
        best_run = min(best_run, time.perf_counter() - start)
    return {
        "texts": len(texts),
        "encoder_sentences_per_s": round(len(texts) / best_encode, 1),
        "enrichment_run_sentences_per_s": round(len(texts) / best_run, 1),
        "ratio": round(best_encode / best_run, 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memcrm.models.eval_enrichment")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--artifact-dir", type=Path, default=None)
    parser.add_argument(
        "--throughput", action="store_true", help="also time run() against Encoder.encode"
    )
    args = parser.parse_args(argv)
    ctx = Context(args.data_dir or default_data_dir(), args.artifact_dir)
    tasks = {name: task(ctx) for name, task in TASKS}
    document: dict[str, Any] = {
        "tasks": tasks,
        "all_meet_target": all(t.get("meets_target", False) for t in tasks.values()),
        "model_version": ctx.model.version,
    }
    if args.throughput:
        document["throughput"] = throughput(ctx)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
