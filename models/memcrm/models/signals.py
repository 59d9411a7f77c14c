"""Customer signals: three probabilities about a customer, each explained over their memories.

A signal is a prediction about the customer as a whole, not about a current message or an
action: ``churn_risk`` (leaves within 90 days), ``purchase_propensity`` (buys within 30 days)
and ``support_need`` (contacts support within 7 days). The model is the next-best-action
network (:class:`~memcrm.models.nba_net.NbaNet`) with the signals in place of the actions,
trained on the journey simulator's signal outcomes (``memcrm.models.simulator``, causal
structure in its docstring) by ``python -m memcrm.models.train_signals``, and served from a
verified artifact (``signals.pt`` + ``signals.json``) by the same :class:`NbaScorer`. Like the
NBA model it reads each memory's enrichment features (manifest key ``enrichment``,
``nba_net.EnrichmentSpec``; ``MemoryFeatures.from_recalled`` takes them from the stored
memories); an artifact without them (every one before) loads and scores as it did.

Why reuse ``Action`` for the definitions: the scorer, its catalog check and
``catalog_fingerprint`` all take actions, and the network reads only ``action_id``, ``title``
and ``description``. A signal is not something the company does, so its ``channels`` are
empty (it never goes out) and its ``value`` is 1.0 (propensity x value is the probability);
the recommender never sees this catalog.

Always score signals with no context (``context=None``): the network was trained with the
context absent, so a context would move the outputs in ways it never learned. The SHAP game of
:func:`predict_signals` has the memories as its only players (no context player), seeded and
budgeted like the recommender's, with one output per signal: one shap run explains all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from memcrm.core.types import SIGNAL_NAMES
from memcrm.decisions.catalog import Action
from memcrm.models.nba import (
    ArtifactIntegrityError,
    MemoryFeatures,
    NbaScorer,
    PreparedDecision,
    default_artifact_dir,
    sigmoid,
)
from memcrm.models.nba_net import NbaNet

SIGNALS_ARTIFACT = "signals"
HORIZON_DAYS: Mapping[str, int] = {
    "churn_risk": 90,
    "purchase_propensity": 30,
    "support_need": 7,
}
DEFAULT_PERMUTATIONS = 10  # as the recommender: shap's "auto" budget
DEFAULT_SEED = 0

SIGNAL_DEFINITIONS: tuple[Action, ...] = (
    Action(
        action_id="churn_risk",
        title="Risk that the customer churns",
        description=(
            "Probability that the customer stops flying with us and leaves for another airline "
            "within the next 90 days, typically after lost bags, cancelled or late flights and "
            "service problems that were never put right; good trips make it less likely."
        ),
        channels=frozenset(),
        value=1.0,
    ),
    Action(
        action_id="purchase_propensity",
        title="Propensity to buy again",
        description=(
            "Probability that the customer books another flight or buys an extra such as a "
            "seat upgrade or bags within the next 30 days; satisfied customers buy again, "
            "recent trouble puts them off."
        ),
        channels=frozenset(),
        value=1.0,
    ),
    Action(
        action_id="support_need",
        title="Need for customer support soon",
        description=(
            "Probability that the customer contacts customer support within the next 7 days, "
            "because a recent problem such as a lost or damaged bag, a cancelled or delayed "
            "flight or an unresolved service case is still open."
        ),
        channels=frozenset(),
        value=1.0,
    ),
)


def load_signal_scorer(artifact_dir: Path | str | None = None) -> NbaScorer:
    """The shipped signal model (default: ``memcrm/models/artifacts``), sha256-verified.

    Raises ``ArtifactIntegrityError`` when the artifact is missing, its weights do not match the
    manifest's sha256, it was trained for other definitions, or it is not a signal model.
    """
    directory = Path(artifact_dir) if artifact_dir is not None else default_artifact_dir()
    if not (directory / f"{SIGNALS_ARTIFACT}.pt").is_file():
        raise ArtifactIntegrityError(
            f"no customer-signal model in {directory} (run `python -m memcrm.models.train_signals`)"
        )
    scorer = NbaScorer(directory, name=SIGNALS_ARTIFACT, catalog=SIGNAL_DEFINITIONS)
    if scorer.manifest.get("name") != SIGNALS_ARTIFACT or scorer.profile_spec is not None:
        raise ArtifactIntegrityError(
            f"artifact {scorer.version} is not a customer-signal model "
            "(run `python -m memcrm.models.train_signals`)"
        )
    return scorer


@dataclass(frozen=True, slots=True)
class SignalPrediction:
    """One signal for one customer, with its SHAP explanation over the memories.

    ``memory_shap[i]`` is memory ``i``'s SHAP value of the signal's log-odds;
    ``base_log_odds`` (no memory present) plus their sum is ``log_odds``. Without
    explanation (``explain=False``) ``memory_shap`` is None.
    """

    signal: str
    probability: float
    log_odds: float
    base_log_odds: float
    memory_shap: NDArray[np.float64] | None
    explainer: str


def predict_signals(
    net: NbaNet,
    memories: MemoryFeatures,
    *,
    explain: bool = True,
    seed: int = DEFAULT_SEED,
    permutations: int = DEFAULT_PERMUTATIONS,
) -> tuple[SignalPrediction, ...]:
    """Every signal of one customer in ``SIGNAL_NAMES`` order; ``net`` is a served float64
    network, e.g. ``load_signal_scorer().net``. Same inputs and seed give identical numbers."""
    if net.n_actions != len(SIGNAL_NAMES):
        raise ValueError(f"a signal network has {len(SIGNAL_NAMES)} outputs, not {net.n_actions}")
    prepared = PreparedDecision(net, memories, None)
    m = len(memories)
    if not explain:
        ends = prepared.logits(np.stack([np.zeros(m + 1, bool), np.ones(m + 1, bool)]))
        return tuple(
            SignalPrediction(
                name, sigmoid(float(ends[1, k])), float(ends[1, k]), float(ends[0, k]), None, ""
            )
            for k, name in enumerate(SIGNAL_NAMES)
        )
    from memcrm.explain.shapley import default_max_evals, explain_game

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        # The context player of a prepared decision is always absent here.
        absent = np.zeros((coalitions.shape[0], 1), dtype=bool)
        return prepared.logits(np.hstack([coalitions, absent]))

    results = explain_game(game, m, seed=seed, max_evals=default_max_evals(m, permutations))
    return tuple(
        SignalPrediction(
            signal=name,
            probability=sigmoid(result.output_value),
            log_odds=result.output_value,
            base_log_odds=result.base_value,
            memory_shap=result.values,
            explainer=result.explainer,
        )
        for name, result in zip(SIGNAL_NAMES, results, strict=True)
    )
