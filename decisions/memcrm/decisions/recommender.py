"""Next best action: score every eligible catalog action, rank, and explain the ones returned.

Scoring: the propensity model gives the log-odds that each action succeeds given the recalled
memories and the current context; ``propensity = sigmoid(log-odds)`` and the priority score is
``propensity x value`` (the catalog's business value of success). Actions that cannot go out on
the requested channel are scored too (for the audit trail) but never returned.

Explaining: one SHAP game per decision whose players are the recalled memories plus the
feature group ``context`` (the current message). A coalition is a set of present players; the
model scores it by summing only the present memories' encodings (a memory absent from the
coalition is absent from the set), so the base value is the model's output for a customer we
know nothing about. The game is multi-output -- one output per returned action, each the
action's log-odds -- so one shap run explains every returned action. All coalitions are scored
in one batched forward (see ``PreparedDecision``), which keeps a 32-memory decision within a
few milliseconds.

Budget: ten antithetic permutation pairs (``max_evals = 10 x (2 x players + 1)``, shap's own
``"auto"`` default), or exact enumeration when that costs no more (at most 6 memories). With a
fixed seed and the decision's scoring precision (``DecisionAudit.scoring_precision``, kept in
its record), replaying a decision gives identical numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from memcrm.core.errors import ConfigError, InvalidArgument
from memcrm.core.text import snippet
from memcrm.core.types import (
    Channel,
    ConsideredAction,
    Decision,
    Direction,
    Explanation,
    FeatureAttribution,
    Memory,
    MemoryAttribution,
    RecalledMemory,
    RecommendedAction,
)
from memcrm.decisions.arbitration import CustomerHistory, Filtered, Ranked, arbitrate
from memcrm.decisions.catalog import Action
from memcrm.decisions.policy import DecisionContext, ProfileFacts, build_features
from memcrm.decisions.tenant_catalog import TenantCatalog, builtin_catalog
from memcrm.explain.shapley import GameExplanation, default_max_evals, explain_game, warm_up
from memcrm.models.nba import (
    DEFAULT_SCORING_PRECISION,
    MemoryFeatures,
    NbaScorer,
    PreparedDecision,
    ScoringPrecision,
    sigmoid,
)

CONTEXT_FEATURE = "context"
CONTEXT_VALUE_CHARS = 200
SNIPPET_CHARS = 48
DEFAULT_PERMUTATIONS = 10
DEFAULT_SEED = 0

_NOUNS = {
    Channel.UNSPECIFIED: "interaction",
    Channel.EMAIL: "email",
    Channel.CHAT: "chat message",
    Channel.VOICE: "call",
    Channel.SMS: "SMS",
    Channel.SOCIAL: "social message",
    Channel.MEETING: "meeting",
    Channel.TICKET: "ticket",
    Channel.WEB: "web visit",
    Channel.PURCHASE: "purchase",
}


class TextEncoder(Protocol):
    """What the recommender needs from ``memcrm.models.encoder.Encoder``."""

    name: str

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What a decision reads besides the recalled memories: the moment, the channel and the
    current message (``context``), the tenant's catalog with its policies, and what is known
    about the customer (profile facts, contact and outcome history with consent, and the
    latest values of the interaction attributes the catalog declares)."""

    context: DecisionContext
    catalog: TenantCatalog
    profile: ProfileFacts = field(default_factory=ProfileFacts)
    history: CustomerHistory = field(default_factory=CustomerHistory)
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecisionAudit:
    decision: Decision
    # Every catalog action, best first (ranked by rank, then the filtered in catalog order):
    # its model numbers and its arbitration (rank and priority, or the policy that filtered
    # it, with what that policy read).
    considered: tuple[ConsideredAction, ...]
    catalog_version: str
    scoring_precision: ScoringPrecision  # the arithmetic it was scored and explained in


class Recommender:
    """Scores a tenant catalog with the propensity model, arbitrates (policies, contact limits,
    consent, priority) and explains the returned actions."""

    def __init__(
        self,
        encoder: TextEncoder | None,
        scorer: NbaScorer,
        *,
        seed: int = DEFAULT_SEED,
        permutations: int = DEFAULT_PERMUTATIONS,
        warm: bool = True,
    ) -> None:
        if encoder is not None and scorer.encoder_name and encoder.name != scorer.encoder_name:
            raise ConfigError(
                f"model {scorer.version} was trained on {scorer.encoder_name} embeddings, "
                f"not {encoder.name}"
            )
        if permutations < 1:
            raise ValueError("permutations must be at least 1")
        self._columns = {action_id: i for i, action_id in enumerate(scorer.action_ids)}
        self._encoder = encoder
        self._scorer = scorer
        self._seed = seed
        self._permutations = permutations
        self.check_catalog(builtin_catalog())
        if warm:
            warm_up()
            self._scorer.logits(MemoryFeatures.empty(), None)

    @property
    def model_version(self) -> str:
        return self._scorer.version

    @property
    def model_sha256(self) -> str:
        return self._scorer.sha256

    def check_catalog(self, catalog: TenantCatalog) -> None:
        """Refuse a catalog with actions the propensity model cannot score (ConfigError)."""
        missing = [a for a in catalog.action_ids if a not in self._columns]
        if missing:
            known = ", ".join(sorted(self._columns))
            raise ConfigError(
                f"model {self._scorer.version} cannot score actions {missing} (it knows {known})"
            )

    def decide(
        self,
        recalled: Sequence[RecalledMemory],
        context: str,
        channel: Channel,
        top_n: int,
        now: datetime,
        *,
        context_embedding: NDArray[Any] | None = None,
    ) -> Decision:
        """The ``top_n`` best actions of the built-in catalog for a customer known only by
        ``recalled`` (no profile, no contact history), each explained. ``context_embedding``
        (384 floats) skips encoding ``context``; without it a non-empty context needs the
        encoder. ``Channel.UNSPECIFIED`` accepts every action."""
        inputs = DecisionInputs(DecisionContext(channel, now, context), builtin_catalog())
        return self.decide_audited(
            recalled, inputs, top_n, context_embedding=context_embedding
        ).decision

    def decide_audited(
        self,
        recalled: Sequence[RecalledMemory],
        inputs: DecisionInputs,
        top_n: int,
        *,
        context_embedding: NDArray[Any] | None = None,
        precision: ScoringPrecision = DEFAULT_SCORING_PRECISION,
    ) -> DecisionAudit:
        """Score, arbitrate and explain one decision, keeping every action considered.

        The model scores every catalog action in one pass (filtered ones too, so the record
        shows what a policy overrode); arbitration filters them by the catalog's policies in
        order (channel, consent, eligibility, applicability, suitability, suppression,
        contact) and ranks the rest by propensity x context weight x value x lever
        (``memcrm.decisions.arbitration``); the ``top_n`` best are explained.
        """
        if top_n < 1:
            raise InvalidArgument("top_n", "must be at least 1")
        catalog, context = inputs.catalog, inputs.context
        self.check_catalog(catalog)
        vector = self._context_vector(context.text, context_embedding)
        memories = [r.memory for r in recalled]
        prepared = self._scorer.prepare(
            MemoryFeatures.from_recalled(recalled, context.now), vector, precision=precision
        )
        # Every player absent (row 0) and present (row 1): the ranking reads row 1, and the
        # explanations take both as their base and output values, the very same numbers.
        ends = prepared.ends()
        log_odds = ends[1]
        logit = {a: float(log_odds[self._columns[a]]) for a in catalog.action_ids}
        propensity = {a: sigmoid(x) for a, x in logit.items()}
        features = build_features(
            catalog.schema,
            context,
            inputs.profile,
            memories,
            consent_marketing=inputs.history.consent.marketing,
            attributes=inputs.attributes,
        )
        arbitration = arbitrate(catalog, context, features, inputs.history, propensity, top_n=top_n)
        top = arbitration.top
        explanations = self._explain(prepared, [self._columns[r.action_id] for r in top], ends)
        cited = [MemoryAttribution.of(m, 0.0) for m in memories]  # each action sets its values
        actions = [
            self._recommended(
                r.rank, catalog.action(r.action_id).action, r, game, recalled, cited, context.text
            )
            for r, game in zip(top, explanations, strict=True)
        ]
        # Best first: the ranked actions by rank, then the filtered ones in catalog order.
        ranked_first = sorted(
            arbitration.considered,
            key=lambda c: (0, c.rank) if isinstance(c, Ranked) else (1, 0),
        )
        considered = tuple(
            _considered(c, logit[c.action_id], propensity[c.action_id], catalog, top_n)
            for c in ranked_first
        )
        decision = Decision(
            actions=actions, model_version=self._scorer.version, model_sha256=self._scorer.sha256
        )
        return DecisionAudit(decision, considered, catalog.version, precision)

    def _context_vector(self, context: str, embedding: NDArray[Any] | None) -> NDArray[Any] | None:
        if embedding is not None:
            return np.asarray(embedding, dtype=np.float32)
        if not context.strip():
            return None
        if self._encoder is None:
            raise ConfigError("a context text needs an encoder or a precomputed embedding")
        vector: NDArray[np.float32] = self._encoder.encode([context])[0]
        return vector

    def _explain(
        self, prepared: PreparedDecision, columns: list[int], ends: NDArray[np.float64]
    ) -> list[GameExplanation]:
        if not columns:
            return []
        n_players = prepared.n_players

        def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
            return prepared.logits(coalitions, columns)

        budget = default_max_evals(n_players, self._permutations)
        return explain_game(
            game, n_players, seed=self._seed, max_evals=budget, ends=ends[:, columns]
        )

    def _recommended(
        self,
        rank: int,
        action: Action,
        ranked: Ranked,
        game: GameExplanation,
        recalled: Sequence[RecalledMemory],
        cited: Sequence[MemoryAttribution],
        context: str,
    ) -> RecommendedAction:
        """``cited[i]`` is memory ``i``'s citation (any SHAP value): this action's value is set."""
        n = len(recalled)
        attributions = [
            MemoryAttribution(
                memory_id=c.memory_id,
                interaction_id=c.interaction_id,
                shap_value=value,
                ingest_trace=c.ingest_trace,
                snippet=c.snippet,
                occurred_at=c.occurred_at,
            )
            for c, value in zip(cited, game.values[:n].tolist(), strict=True)
        ]
        memories = sorted(attributions, key=lambda m: -abs(m.shap_value))
        by_id = {r.memory.memory_id: r.memory for r in recalled}
        context_shap = float(game.values[n])
        explanation = Explanation(
            explainer=game.explainer,
            base_value=game.base_value,
            output_value=game.output_value,
            output_name=f"log-odds that {action.action_id} succeeds",
            features=[
                FeatureAttribution(
                    feature=CONTEXT_FEATURE,
                    value=snippet(context, CONTEXT_VALUE_CHARS),
                    shap_value=context_shap,
                )
            ],
            memories=memories,
            summary=summarise(
                action,
                memories,
                context,
                context_shap,
                describe_memory(by_id[memories[0].memory_id]) if memories else "",
            ),
        )
        return RecommendedAction(
            action_id=action.action_id,
            title=action.title,
            rank=rank,
            score=ranked.priority,
            propensity=ranked.propensity,
            value=action.value,
            explanation=explanation,
        )


def describe_memory(memory: Memory) -> str:
    """E.g. ``the 2015-02-17 social message 'lost my bag…'``."""
    interaction = memory.interaction
    noun = _NOUNS.get(interaction.channel, "interaction")
    if interaction.direction is Direction.OUTBOUND:
        noun += " to the customer"
    text = interaction.text or interaction.subject
    quoted = f" '{snippet(text, SNIPPET_CHARS)}'" if text.strip() else ""
    return f"the {interaction.occurred_at.date().isoformat()} {noun}{quoted}"


def summarise(
    action: Action,
    memories: Sequence[MemoryAttribution],
    context: str,
    context_shap: float,
    top_description: str,
) -> str:
    """One sentence naming the strongest contribution and which way it pushed
    (``top_description``: ``describe_memory`` of the strongest memory)."""
    has_context = bool(context.strip())
    current = f"the current message '{snippet(context, SNIPPET_CHARS)}'"
    if not memories:
        if not has_context:
            return (
                f"No memories were recalled and there is no current message, so "
                f"{action.action_id} rests on the model's baseline alone."
            )
        return (
            f"No memories were recalled; {current} moves {action.action_id} by "
            f"{context_shap:+.2f} log-odds from the model's baseline."
        )
    top = memories[0]
    memory_text = f"{top_description} ({top.shap_value:+.2f} log-odds)"
    if has_context and abs(context_shap) > abs(top.shap_value):
        lead = "Recommended mainly because of" if context_shap >= 0 else "Recommended despite"
        return (
            f"{lead} {current} ({context_shap:+.2f} log-odds); the strongest memory is "
            f"{memory_text}."
        )
    lead = "Recommended mainly because of" if top.shap_value >= 0 else "Recommended despite"
    if not has_context:
        tail = "there is no current message"
    elif context_shap >= 0:
        tail = f"the current message adds {context_shap:+.2f}"
    else:
        tail = f"the current message takes away {abs(context_shap):.2f}"
    return f"{lead} {memory_text}; {tail}."


def _considered(
    c: Ranked | Filtered,
    log_odds: float,
    propensity: float,
    catalog: TenantCatalog,
    top_n: int,
) -> ConsideredAction:
    """An arbitration outcome as the decision record keeps it."""
    spec = catalog.action(c.action_id)
    if isinstance(c, Ranked):
        return ConsideredAction(
            action_id=c.action_id,
            title=c.title,
            log_odds=log_odds,
            propensity=propensity,
            value=c.value,
            score=c.priority,
            rank=c.rank if c.selected else 0,
            reason="" if c.selected else f"ranked {c.rank}, below the top {top_n}",
            context_weight=c.context_weight,
            lever=c.lever,
        )
    reads = json.dumps(dict(c.reads), ensure_ascii=False, sort_keys=True) if c.reads else ""
    return ConsideredAction(
        action_id=c.action_id,
        title=c.title,
        log_odds=log_odds,
        propensity=propensity,
        value=spec.action.value,
        score=0.0,
        rank=0,
        reason=f"filtered by {c.kind} {c.policy}: {c.rule}",
        lever=spec.lever,
        filtered_by=str(c.kind),
        policy=c.policy,
        reads_json=reads,
    )
