"""Retrieval and latency arithmetic shared by the memory benchmarks."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """The fraction of the distinct ``relevant`` ids found among the first ``k`` of ``ranked``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    wanted = set(relevant)
    if not wanted:
        raise ValueError("recall is undefined without relevant ids")
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..1 (the definition of scripts/bench_latency.py)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in 0..1, got {q}")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Ranked:
    """One question's outcome: its category, its evidence and what a system ranked first."""

    category: str
    relevant: tuple[str, ...]
    ranked: tuple[str, ...]


def recall_table(results: Iterable[Ranked], ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"recall_at_<k>": {"overall": mean, "<category>": mean, ...}}``, each a mean over
    questions (so ``overall`` weighs categories by their question counts), rounded to 4."""
    rows = list(results)
    if not rows:
        raise ValueError("no questions to score")
    categories = sorted({r.category for r in rows})
    table: dict[str, dict[str, float]] = {}
    for k in ks:
        scores = [(r.category, recall_at_k(r.ranked, r.relevant, k)) for r in rows]
        column = {"overall": round(sum(s for _, s in scores) / len(scores), 4)}
        for c in categories:
            mine = [s for cat, s in scores if cat == c]
            column[c] = round(sum(mine) / len(mine), 4)
        table[f"recall_at_{k}"] = column
    return table
