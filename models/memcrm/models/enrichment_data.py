"""Data sets and splits for the enrichment heads, shared by training and evaluation.

Splits are fixed functions of stable ids so that training, evaluation and the next-best-action
simulator agree on which airline tweets are held out (never trained on) without storing lists:

- airline held-out 20 %: ``memcrm.models.simulator.split_of`` (sha256 of ``split:<tweet_id>``
  mod 10 in {0, 1}), after dropping repeated ``tweet_id`` rows (first occurrence kept);
- airline validation (model selection): training tweets with sha256 ``enrich-val:<tweet_id>``
  mod 10 == 0;
- Banking77 validation: ``train.csv`` rows with sha256 ``enrich-val:<text>`` mod 10 == 0; the
  official ``test.csv`` is only ever scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from memcrm.core.settings import Settings
from memcrm.models.simulator import Split, split_of

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
# The airline data set's ``negativereason`` values, sorted (the issue head's label order).
ISSUES: tuple[str, ...] = (
    "Bad Flight",
    "Can't Tell",
    "Cancelled Flight",
    "Customer Service Issue",
    "Damaged Luggage",
    "Flight Attendant Complaints",
    "Flight Booking Problems",
    "Late Flight",
    "Lost Luggage",
    "longlines",
)
SPLIT_RULE = {
    "airline_held_out": "sha256('split:<tweet_id>')[:8] big-endian mod 10 in {0,1} "
    "(memcrm.models.simulator.split_of), tweet_id deduplicated keeping the first row",
    "airline_validation": "training tweets with sha256('enrich-val:<tweet_id>')[:8] mod 10 == 0",
    "banking77_validation": "train.csv rows with sha256('enrich-val:<text>')[:8] mod 10 == 0",
    "banking77_test": "test.csv, scored only",
}


def default_data_dir() -> Path:
    """``MEMCRM_DATA_DIR`` (default ``../shared/data``), relative to the source checkout."""
    data_dir = Settings().data_dir
    if not data_dir.is_absolute():
        data_dir = Path(__file__).resolve().parents[3] / data_dir
    return data_dir


def _bucket(key: str) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class TextSet:
    """Texts with integer labels into ``labels`` (-1: no label for this task), and optionally
    how sure the annotators were of each label (0..1; used to weight the training loss)."""

    texts: tuple[str, ...]
    y: NDArray[np.int64]
    labels: tuple[str, ...]
    confidence: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Banking77:
    train: TextSet
    val: TextSet
    test: TextSet
    files: dict[str, Path]


@dataclass(frozen=True)
class Airline:
    """Airline tweets; ``sentiment`` and ``issue`` share texts (``issue.y`` -1 when no reason)."""

    train_sentiment: TextSet
    train_issue: TextSet
    val_sentiment: TextSet
    val_issue: TextSet
    held_sentiment: TextSet
    held_issue: TextSet
    files: dict[str, Path]


def banking77_labels(data_dir: Path) -> tuple[str, ...]:
    with (data_dir / "banking77" / "categories.json").open() as handle:
        return tuple(json.load(handle))


def load_labelled_csv(path: Path, labels: tuple[str, ...] | None = None) -> TextSet:
    """A CSV with columns ``text`` and ``category``; labels in first-seen order unless given."""
    frame = pd.read_csv(path, dtype={"text": str, "category": str}, keep_default_na=False)
    missing = {"text", "category"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
    categories = [str(c) for c in frame["category"]]
    if labels is None:
        labels = tuple(dict.fromkeys(categories))
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(categories) - set(index))
    if unknown:
        raise ValueError(f"{path} has categories outside the label set: {unknown[:5]}")
    y = np.array([index[c] for c in categories], dtype=np.int64)
    return TextSet(tuple(str(t) for t in frame["text"]), y, labels)


def _subset(data: TextSet, keep: NDArray[np.bool_]) -> TextSet:
    texts = tuple(t for t, k in zip(data.texts, keep, strict=True) if k)
    confidence = None if data.confidence is None else data.confidence[keep]
    return TextSet(texts, data.y[keep], data.labels, confidence)


def load_banking77(data_dir: Path) -> Banking77:
    folder = data_dir / "banking77"
    labels = banking77_labels(data_dir)
    full = load_labelled_csv(folder / "train.csv", labels)
    val = np.array([_bucket(f"enrich-val:{t}") == 0 for t in full.texts])
    return Banking77(
        train=_subset(full, ~val),
        val=_subset(full, val),
        test=load_labelled_csv(folder / "test.csv", labels),
        files={
            "banking77/train.csv": folder / "train.csv",
            "banking77/test.csv": folder / "test.csv",
            "banking77/categories.json": folder / "categories.json",
        },
    )


def load_airline(data_dir: Path) -> Airline:
    path = data_dir / "airline-tweets" / "Tweets.csv"
    frame = pd.read_csv(path, dtype={"tweet_id": "int64"})
    frame = frame.drop_duplicates("tweet_id", keep="first")
    ids = [int(t) for t in frame["tweet_id"]]
    held = np.array([split_of(t) == Split.HELD_OUT for t in ids])
    val = np.array([_bucket(f"enrich-val:{t}") == 0 for t in ids]) & ~held
    train = ~held & ~val
    texts = tuple(str(t) for t in frame["text"])
    # CrowdFlower's per-row agreement: how sure the annotators were of the label.
    sentiment = TextSet(
        texts,
        np.array([SENTIMENTS.index(s) for s in frame["airline_sentiment"]], dtype=np.int64),
        SENTIMENTS,
        frame["airline_sentiment_confidence"].fillna(1.0).to_numpy(dtype=np.float32),
    )
    reasons = [
        ISSUES.index(r) if s == "negative" and isinstance(r, str) else -1
        for s, r in zip(frame["airline_sentiment"], frame["negativereason"], strict=True)
    ]
    # A few non-negative rows carry free-text "reasons" ("best flight"): not issues.
    negative_reasons = frame.loc[frame["airline_sentiment"] == "negative", "negativereason"]
    unknown = set(negative_reasons.dropna()) - set(ISSUES)
    if unknown:
        raise ValueError(f"{path} has negative reasons outside the label set: {sorted(unknown)}")
    issue = TextSet(
        texts,
        np.array(reasons, dtype=np.int64),
        ISSUES,
        frame["negativereason_confidence"].fillna(1.0).to_numpy(dtype=np.float32),
    )
    return Airline(
        train_sentiment=_subset(sentiment, train),
        train_issue=_subset(issue, train),
        val_sentiment=_subset(sentiment, val),
        val_issue=_subset(issue, val),
        held_sentiment=_subset(sentiment, held),
        held_issue=_subset(issue, held),
        files={"airline-tweets/Tweets.csv": path},
    )


def labelled_only(data: TextSet) -> TextSet:
    """Rows that carry a label (the issue task: negative tweets with a reason)."""
    return _subset(data, data.y >= 0)
