"""Evaluate the customer-signal model on held-out simulated customers.

    python -m memcrm.models.eval_signals [--data-dir DIR] [--artifact-dir DIR] [--seed N]

Prints one JSON document (everything else goes to stderr); ``evaluate_signals`` returns the
same dict for ``make eval-nba``. The shipped artifact (``signals.pt``/``signals.json``,
sha256-verified by ``load_signal_scorer``) scores fresh held-out customers of the journey
simulator (``memcrm.models.simulator``: held-out tweets only, the eval seed rather than the
training seed, the simulator settings recorded in the manifest), with the context absent as
in training and serving. Their tweets are embedded in this run with the model's encoder; for a
model with enrichment features (manifest key ``enrichment``) they are also enriched in this run
as ingestion would (``nba_enrichment.enrich_texts``: the shipped enrichment heads, which never
trained on held-out tweets, and the interpretation pipeline; no cache), exactly as
``memcrm.models.eval_nba`` does for the NBA model.

Per signal:

- ``roc_auc``: the model's log-odds against the drawn outcomes; ``roc_auc_true_logit`` is the
  same for the simulator's true log-odds, the ceiling no model can beat on average (outcomes
  are Bernoulli draws).
- ``log_loss`` (and the true log-odds' own), base rate and mean predicted probability.
- ``precision_at_1``: the first ``explained`` customers are explained with
  ``signals.predict_signals`` (the serving path: SHAP of each signal's log-odds over the
  memories via ``memcrm.explain.shapley.explain_game``, seeded, recommender budget). Over the
  customers who have a true cause of the signal, the share whose memory with the largest |SHAP|
  is a true cause; ``chance_rate`` is the expected share for a random memory. True causes are
  those of the simulator: an inbound, non-neutral memory of a driver kind, however old, so a
  year-old complaint counts as a cause of ``support_need`` (7-day half-life). Hence also
  ``precision_at_1_material``: over the customers who have a *material* cause (removing that
  memory alone moves the true log-odds by at least ``MATERIAL_LOGIT``), the share whose top
  memory is one, with its own chance rate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from memcrm.core.types import EMBEDDING_DIM, SIGNAL_NAMES, Enrichment
from memcrm.models import simulator
from memcrm.models.nba import MemoryFeatures, NbaScorer
from memcrm.models.nba_enrichment import enrich_texts
from memcrm.models.nba_net import N_ENRICHMENT_FEATURES, NbaNet
from memcrm.models.signals import (
    DEFAULT_PERMUTATIONS,
    SIGNAL_DEFINITIONS,
    load_signal_scorer,
    predict_signals,
)
from memcrm.models.simulator import (
    JourneySimulator,
    SimCustomer,
    SimulatorConfig,
    Split,
    default_tweets_path,
)
from memcrm.models.train_nba import Packed, pack, predict

EVAL_SEED = 20150224  # as eval_nba: customers and SHAP permutations
HELD_OUT_CUSTOMERS = 4_000
EXPLAINED_CUSTOMERS = 1_000
MATERIAL_LOGIT = 0.05
THREADS = 1


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def signal_view(customer: SimCustomer) -> SimCustomer:
    """The customer as a signal example for ``train_nba.pack``: signal outcomes, probabilities
    and causes in place of the actions', and no context (signals never read one)."""
    truth = customer.signals
    return dataclasses.replace(
        customer,
        context=None,
        logits=truth.logits,
        probabilities=truth.probabilities,
        outcomes=truth.outcomes,
        best_action=max(SIGNAL_NAMES, key=lambda name: truth.probabilities[name]),
        causes=truth.causes,
        context_causes=frozenset(),
    )


def history_tweets(customers: Sequence[SimCustomer]) -> list[int]:
    """The tweet indices a signal model needs embedded: histories only (no contexts)."""
    return sorted({i.tweet for c in customers for i in c.history})


def embedding_table(
    vectors: NDArray[np.float32], used: Sequence[int]
) -> tuple[torch.Tensor, dict[int, int]]:
    """Row 0 is a zero vector for padding; tweet ``used[k]`` lives at row ``k + 1``."""
    table = torch.from_numpy(np.concatenate([np.zeros((1, EMBEDDING_DIM), np.float32), vectors]))
    return table, {tweet: row + 1 for row, tweet in enumerate(used)}


def true_signal_logits(customers: Sequence[SimCustomer]) -> NDArray[np.float64]:
    """The simulator's true log-odds of every signal (N, n_signals), ``SIGNAL_NAMES`` order."""
    return np.asarray([[c.signals.logits[name] for name in SIGNAL_NAMES] for c in customers])


def pack_signals(
    customers: Sequence[SimCustomer],
    rows: dict[int, int],
    width: int,
    enrichments: Mapping[int, Enrichment] | None = None,
) -> tuple[Packed, NDArray[np.float64]]:
    """Packed signal examples and the simulator's true log-odds (N, n_signals);
    ``enrichments`` (tweet index -> its enrichment) fills ``Packed.enrichment`` as in
    ``train_nba.pack``."""
    views = [signal_view(c) for c in customers]
    packed = pack(views, rows, SIGNAL_DEFINITIONS, width, enrichments)
    return packed, true_signal_logits(customers)


def _log_loss(logits: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def signal_metrics(
    logits: NDArray[np.float64], outcomes: NDArray[np.float32], true_logits: NDArray[np.float64]
) -> dict[str, Any]:
    """Per-signal ROC-AUC and log loss of the model and of the true log-odds (the ceiling)."""
    from sklearn.metrics import roc_auc_score

    per_signal = {}
    for k, name in enumerate(SIGNAL_NAMES):
        y = outcomes[:, k].astype(np.float64)
        per_signal[name] = {
            "base_rate": float(y.mean()),
            "mean_predicted_probability": float(np.mean(1.0 / (1.0 + np.exp(-logits[:, k])))),
            "roc_auc": float(roc_auc_score(y, logits[:, k])),
            "roc_auc_true_logit": float(roc_auc_score(y, true_logits[:, k])),
            "log_loss": _log_loss(logits[:, k], y),
            "log_loss_true_logit": _log_loss(true_logits[:, k], y),
        }
    return {"customers": int(outcomes.shape[0]), "per_signal": per_signal}


def customer_memories(data: Packed, table: torch.Tensor, row: int) -> MemoryFeatures:
    """One packed customer's memories as serving builds them (``MemoryFeatures.from_recalled``:
    with each memory's enrichment features when ``data`` has them, else "not known")."""
    m = int(data.mask[row].sum())
    return MemoryFeatures(
        embeddings=table[torch.from_numpy(data.tweets[row, :m])].numpy(),
        ages_days=data.ages[row, :m].astype(np.float64),
        channels=data.channels[row, :m].copy(),
        directions=data.directions[row, :m].copy(),
        enrichment=(
            data.enrichment[row, :m].copy()
            if data.enrichment is not None
            else np.zeros((m, N_ENRICHMENT_FEATURES), np.float32)
        ),
    )


def _material_causes(
    sim: JourneySimulator, customer: SimCustomer, name: str, causes: Sequence[int]
) -> frozenset[int]:
    history = customer.history
    full = customer.signals.logits[name]

    def effect(i: int) -> float:
        return abs(full - sim.signal_logits([*history[:i], *history[i + 1 :]])[name])

    return frozenset(i for i in causes if effect(i) >= MATERIAL_LOGIT)


@dataclass(slots=True)
class _Tally:
    """Precision@1 counts over the customers who have at least one (true or material) cause."""

    counted: int = 0
    hits: int = 0
    chance: float = 0.0

    def add(self, top: int, causes: frozenset[int], n_memories: int) -> None:
        self.counted += 1
        self.hits += top in causes
        self.chance += len(causes) / n_memories

    def rate(self) -> float | None:
        return self.hits / self.counted if self.counted else None

    def chance_rate(self) -> float | None:
        return self.chance / self.counted if self.counted else None


def explanation_faithfulness(
    net: NbaNet,
    sim: JourneySimulator,
    customers: Sequence[SimCustomer],
    data: Packed,
    table: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    """Per-signal precision@1 of ``predict_signals``' SHAP values (see the module docstring).

    ``net`` must be a served float64 network (``NbaScorer.net``); ``data`` rows follow
    ``customers``.
    """
    tallies = {name: {"all": _Tally(), "material": _Tally()} for name in SIGNAL_NAMES}
    for row, customer in enumerate(customers):
        memories = customer_memories(data, table, row)
        for prediction in predict_signals(net, memories, seed=seed):
            name = prediction.signal
            causes = frozenset(customer.signals.causes[name])
            if not causes or prediction.memory_shap is None:
                continue
            top = int(np.argmax(np.abs(prediction.memory_shap)))
            tallies[name]["all"].add(top, causes, len(memories))
            material = _material_causes(sim, customer, name, sorted(causes))
            if material:
                tallies[name]["material"].add(top, material, len(memories))
    return {
        name: {
            "customers_with_a_true_cause": tally["all"].counted,
            "precision_at_1": tally["all"].rate(),
            "chance_rate": tally["all"].chance_rate(),
            "customers_with_a_material_cause": tally["material"].counted,
            "precision_at_1_material": tally["material"].rate(),
            "chance_rate_material": tally["material"].chance_rate(),
        }
        for name, tally in tallies.items()
    }


def evaluate_signals(
    scorer: NbaScorer | None = None,
    tweets_path: Path | None = None,
    *,
    customers: int = HELD_OUT_CUSTOMERS,
    explained: int = EXPLAINED_CUSTOMERS,
    seed: int = EVAL_SEED,
    encoder: TextEncoder | None = None,
) -> dict[str, Any]:
    """The signal model on held-out simulated customers, as one JSON-ready dict.

    ``scorer`` defaults to ``load_signal_scorer()``, ``tweets_path`` to the shared data set and
    ``encoder`` to a new ``Encoder`` (pass the caller's to avoid loading it twice). Does not
    change torch's thread count: callers that need bit-identical numbers across runs fix it.
    """
    started = time.perf_counter()
    scorer = scorer if scorer is not None else load_signal_scorer()
    tweets_path = tweets_path if tweets_path is not None else default_tweets_path()
    if encoder is None:
        from memcrm.models.encoder import Encoder

        encoder = Encoder()
    if scorer.encoder_name and encoder.name != scorer.encoder_name:
        raise ValueError(f"model needs {scorer.encoder_name} embeddings, not {encoder.name}")
    trained_on = scorer.manifest.get("training_data", {}).get("config", {})
    config = SimulatorConfig(max_tweets_per_kind=trained_on.get("max_tweets_per_kind"))
    sim = JourneySimulator(tweets_path, config=config)
    held_out = sim.customers(customers, Split.HELD_OUT, seed)
    used = history_tweets(held_out)
    simulated = time.perf_counter()
    table, rows = embedding_table(encoder.encode([sim.tweets[i].text for i in used]), used)
    embedded = time.perf_counter()
    enrichments = None
    if scorer.enrichment_spec is not None:
        from memcrm.models.encoder import Encoder
        from memcrm.models.enrichment import EnrichmentModel

        # The heads run on the shipped encoder: reuse the caller's when it is one.
        shared = encoder if isinstance(encoder, Encoder) else None
        found = enrich_texts([sim.tweets[i].text for i in used], EnrichmentModel(encoder=shared))
        enrichments = dict(zip(used, found, strict=True))
    enriched = time.perf_counter()
    data, true_logits = pack_signals(held_out, rows, sim.config.max_history, enrichments)
    metrics = signal_metrics(predict(scorer.net, data, table), data.outcomes, true_logits)
    n_explained = min(explained, len(held_out))
    faithfulness = explanation_faithfulness(
        scorer.net, sim, held_out[:n_explained], data, table, seed
    )
    done = time.perf_counter()
    description = sim.describe()
    return {
        "model": {
            "version": scorer.version,
            "sha256": scorer.sha256,
            "sha256_verified_at_load": True,
            "encoder": scorer.encoder_name,
            "training_seed": scorer.manifest.get("seed"),
        },
        "data": {
            "data_set": simulator.DATA_SET,
            "file_sha256": description["file_sha256"],
            "simulator_config": description["config"],
            "held_out_customers": len(held_out),
            "held_out_tweets_embedded": len(used),
            "held_out_tweets_enriched": 0 if enrichments is None else len(enrichments),
            "split": "held-out customers use only held-out tweets (simulator.split_of); "
            "customers drawn with the eval seed, not the training seed; no context",
            "customer_seed": seed,
        },
        "per_signal": {
            name: {
                **metrics["per_signal"][name],
                "explanations": faithfulness[name],
            }
            for name in SIGNAL_NAMES
        },
        "explanations": {
            "explained_customers": n_explained,
            "shap": "memcrm.models.signals.predict_signals: explain_game on each signal's "
            f"log-odds, players = memories, {DEFAULT_PERMUTATIONS} antithetic permutation "
            f"pairs or exact, seed {seed}",
            "precision_at_1": "over customers with a true cause of the signal, share whose "
            "memory with the largest |SHAP| is one",
            "precision_at_1_material": "the same over customers with a material cause, "
            "counting only causes whose removal alone moves the true log-odds by >= "
            f"{MATERIAL_LOGIT}",
        },
        "timing_seconds": {
            "simulate": round(simulated - started, 1),
            "embed": round(embedded - simulated, 1),
            "enrich": round(enriched - embedded, 1),
            "score_and_explain": round(done - enriched, 1),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memcrm.models.eval_signals", description=__doc__
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: MEMCRM_DATA_DIR")
    parser.add_argument("--artifact-dir", type=Path, default=None, help="default: shipped model")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--customers", type=int, default=HELD_OUT_CUSTOMERS)
    parser.add_argument("--explained", type=int, default=EXPLAINED_CUSTOMERS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(THREADS)
    tweets_path = (
        args.data_dir / "airline-tweets" / "Tweets.csv"
        if args.data_dir is not None
        else default_tweets_path()
    )
    with contextlib.redirect_stdout(sys.stderr):
        result = evaluate_signals(
            load_signal_scorer(args.artifact_dir),
            tweets_path,
            customers=int(args.customers),
            explained=int(args.explained),
            seed=int(args.seed),
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
