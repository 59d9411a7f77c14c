"""Customer predictions (churn_risk, purchase_propensity, support_need) and proactive signals.

Why: a CRM wants to act before the customer asks. Every profile carries three predictions, each
a probability with a SHAP explanation over the customer's own memories; after an ingestion, a
prediction that crosses its tenant threshold becomes an event on ``WatchSignals``.

The model (``memcrm.models.signals``) is the next-best-action network trained on the journey
simulator's signal outcomes, with the "actions" being the three predictions and no current
message. What it reads is the customer's ``limit`` most recent memories as of the moment
(recency, not a query, decides what matters for a forecast). The players of an explanation are
those memories; a prediction has no current message and no feature groups, so
``base_value + sum(memory SHAP values) == output_value`` (log-odds) within 1e-4.

Crossings: a customer's last scores live in Redis (``memcrm.memory.signals``). A prediction
crosses when it was below its threshold and now is at or above it (rising), or the reverse
(falling). A customer with no stored scores counts as below every threshold, so a new customer
whose first message already puts them at risk raises an event. Scores are replaced only when
the signal evaluation succeeds, so an evaluation that fails (Redis down) is caught up by the
customer's next ingestion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from memcrm.core.errors import ConfigError
from memcrm.core.settings import Settings
from memcrm.core.tenants import TenantConfigs
from memcrm.core.types import (
    SIGNAL_NAMES,
    Crossing,
    Explanation,
    MemoryAttribution,
    Prediction,
    RecalledMemory,
    SignalEvent,
    TraceRef,
)
from memcrm.decisions.recommender import describe_memory
from memcrm.explain.shapley import warm_up
from memcrm.memory.signals import Scores, SignalState
from memcrm.memory.store import MemoryStore
from memcrm.models.nba import MemoryFeatures, NbaScorer
from memcrm.models.signals import (
    DEFAULT_PERMUTATIONS,
    DEFAULT_SEED,
    load_signal_scorer,
    predict_signals,
)

log = logging.getLogger(__name__)

_READABLE = {
    "churn_risk": "churn risk",
    "purchase_propensity": "purchase propensity",
    "support_need": "support need",
}


class Predictor:
    """The signals model: scores and explains a customer's predictions from their memories
    (``memcrm.models.signals.predict_signals``), as domain predictions with readable
    explanations."""

    def __init__(
        self,
        scorer: NbaScorer,
        *,
        seed: int = DEFAULT_SEED,
        permutations: int = DEFAULT_PERMUTATIONS,
        warm: bool = True,
    ) -> None:
        if tuple(scorer.action_ids) != SIGNAL_NAMES:
            raise ConfigError(
                f"model {scorer.version} predicts {list(scorer.action_ids)}, "
                f"not {list(SIGNAL_NAMES)}"
            )
        self._scorer = scorer
        self._seed = seed
        self._permutations = permutations
        if warm:
            warm_up()
            self.scores([], datetime.now(UTC))

    @property
    def version(self) -> str:
        return self._scorer.version

    @property
    def sha256(self) -> str:
        return self._scorer.sha256

    def scores(self, recalled: Sequence[RecalledMemory], now: datetime) -> dict[str, float]:
        """Each prediction's probability, every memory present (no explanation: cheap)."""
        features = MemoryFeatures.from_recalled(recalled, now)
        return {
            p.signal: p.probability
            for p in predict_signals(self._scorer.net, features, explain=False)
        }

    def explain(
        self, recalled: Sequence[RecalledMemory], now: datetime, names: Iterable[str] = SIGNAL_NAMES
    ) -> tuple[Prediction, ...]:
        """The predictions named (in ``SIGNAL_NAMES`` order), each with its SHAP explanation."""
        wanted = set(names)
        if not wanted:
            return ()
        features = MemoryFeatures.from_recalled(recalled, now)
        by_id = {r.memory.memory_id: r.memory for r in recalled}
        out = []
        for p in predict_signals(
            self._scorer.net, features, seed=self._seed, permutations=self._permutations
        ):
            if p.signal not in wanted or p.memory_shap is None:
                continue
            shap_values = p.memory_shap
            attributions = sorted(
                (
                    MemoryAttribution.of(r.memory, float(shap_values[i]))
                    for i, r in enumerate(recalled)
                ),
                key=lambda m: -abs(m.shap_value),
            )
            top = describe_memory(by_id[attributions[0].memory_id]) if attributions else ""
            explanation = Explanation(
                explainer=p.explainer,
                base_value=p.base_log_odds,
                output_value=p.log_odds,
                output_name=f"log-odds of {p.signal}",
                features=[],
                memories=attributions,
                summary=summarise(p.signal, p.probability, attributions, top),
            )
            out.append(Prediction(p.signal, p.probability, explanation))
        return tuple(out)


def summarise(
    name: str, score: float, memories: Sequence[MemoryAttribution], top_description: str
) -> str:
    """One sentence: the score and the memory that moved it most, and which way."""
    readable = _READABLE.get(name, name)
    if not memories:
        return f"No memories yet: {readable} {score:.2f} is the model's baseline."
    top = memories[0]
    way = "raised most by" if top.shap_value >= 0 else "lowered most by"
    count = f"{len(memories)} memor{'y' if len(memories) == 1 else 'ies'}"
    return (
        f"{readable.capitalize()} {score:.2f} from {count}, {way} {top_description} "
        f"({top.shap_value:+.2f} log-odds)."
    )


def crossing(previous: float | None, score: float, threshold: float) -> Crossing:
    """Which way ``score`` passed ``threshold`` since ``previous`` (None: below everything)."""
    was_above = previous is not None and previous >= threshold
    is_above = score >= threshold
    if is_above == was_above:
        return Crossing.UNSPECIFIED
    return Crossing.RISING if is_above else Crossing.FALLING


@dataclass(frozen=True, slots=True)
class Trigger:
    """The newest memory an ingestion stored for a customer, and the ingestion's trace."""

    memory_id: str
    interaction_id: str
    trace: TraceRef


class CustomerPredictions:
    """A customer's predictions from their ``memories`` most recent memories as of a moment."""

    def __init__(self, store: MemoryStore, predictor: Predictor, *, memories: int = 32) -> None:
        self._store = store
        self.predictor = predictor
        self._limit = memories

    @classmethod
    def configured(cls, store: MemoryStore, settings: Settings) -> CustomerPredictions:
        """The shipped (or ``MEMCRM_SIGNALS_MODEL_DIR``'s) signals model over the customer's
        ``MEMCRM_SIGNALS_MEMORIES`` most recent memories."""
        predictor = Predictor(load_signal_scorer(settings.signals_model_dir))
        return cls(store, predictor, memories=settings.signals_memories)

    def recent(
        self, tenant_id: str, customer_ids: Sequence[str], as_of: datetime
    ) -> dict[str, list[RecalledMemory]]:
        """What the predictions read, per customer (one query)."""
        return self._store.recent_memories(tenant_id, customer_ids, limit=self._limit, as_of=as_of)

    def scores(
        self, tenant_id: str, customer_id: str, as_of: datetime, now: datetime
    ) -> dict[str, float]:
        """Scores from what was recorded by ``as_of``, at ``now`` (no explanation; empty
        without memories). Decision policies read these (``prediction.*`` features)."""
        memories = self.recent(tenant_id, [customer_id], as_of)[customer_id]
        return self.predictor.scores(memories, now) if memories else {}

    def explained(
        self, tenant_id: str, customer_id: str, as_of: datetime
    ) -> tuple[Prediction, ...]:
        """The explained predictions of the profile as of ``as_of`` (none without memories)."""
        memories = self.recent(tenant_id, [customer_id], as_of)[customer_id]
        return self.predictor.explain(memories, as_of) if memories else ()


class SignalWatcher:
    """After an ingestion: recompute the customers' predictions and publish crossings."""

    def __init__(
        self, predictions: CustomerPredictions, state: SignalState, tenants: TenantConfigs
    ) -> None:
        self._predictions = predictions
        self._state = state
        self._tenants = tenants

    def after_ingest(
        self, tenant_id: str, triggers: Mapping[str, Trigger], now: datetime
    ) -> list[SignalEvent]:
        """Evaluate every customer in ``triggers``; returns the events published.

        Raises the stores' errors (``StoreUnavailable``): the caller decides what a failed
        evaluation means for its request (ingestion logs it; the memories are stored).
        """
        if not triggers:
            return []
        predictor = self._predictions.predictor
        recent = self._predictions.recent(tenant_id, list(triggers), now)
        current = {
            customer: Scores(_watermark(memories), predictor.scores(memories, now))
            for customer, memories in recent.items()
            if memories
        }
        replaced = self._state.swap(tenant_id, current)
        thresholds = self._tenants.get(tenant_id).signals
        events: list[SignalEvent] = []
        for customer, previous in sorted(replaced.items()):
            moved = {
                name: crossing(
                    None if previous is None else previous.get(name),
                    current[customer].scores[name],
                    thresholds.threshold(name),
                )
                for name in SIGNAL_NAMES
            }
            names = [name for name, way in moved.items() if way is not Crossing.UNSPECIFIED]
            if not names:
                continue
            trigger = triggers[customer]
            for prediction in predictor.explain(recent[customer], now, names):
                events.append(
                    SignalEvent(
                        customer_id=customer,
                        prediction=prediction,
                        previous_score=None if previous is None else previous.get(prediction.name),
                        threshold=thresholds.threshold(prediction.name),
                        crossing=moved[prediction.name],
                        model_version=predictor.version,
                        evaluated_at=now,
                        memory_id=trigger.memory_id,
                        interaction_id=trigger.interaction_id,
                        trace=trigger.trace,
                    )
                )
        ids = self._state.publish(tenant_id, events)
        return [replace(e, event_id=i) for e, i in zip(events, ids, strict=True)]


def _watermark(memories: Sequence[RecalledMemory]) -> int:
    """Orders computations: the newest recorded_at (microseconds) among the memories read."""
    newest = max(r.memory.recorded_at for r in memories)
    return int(newest.timestamp() * 1_000_000)
