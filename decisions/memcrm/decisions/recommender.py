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
fixed seed, replaying a decision gives identical numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from memcrm.core.errors import ConfigError, InvalidArgument
from memcrm.core.text import snippet
from memcrm.core.types import (
    Channel,
    Decision,
    Direction,
    Explanation,
    FeatureAttribution,
    Memory,
    MemoryAttribution,
    RecalledMemory,
    RecommendedAction,
)
from memcrm.decisions.catalog import Action
from memcrm.explain.shapley import GameExplanation, default_max_evals, explain_game, warm_up
from memcrm.models.nba import MemoryFeatures, NbaScorer, PreparedDecision, sigmoid

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
class ScoredAction:
    """One catalog action as scored for a decision, returned or not (for the audit record)."""

    action_id: str
    title: str
    log_odds: float
    propensity: float
    value: float
    score: float
    eligible: bool
    reason: str  # why it was not returned; "" when it was


@dataclass(frozen=True, slots=True)
class DecisionAudit:
    decision: Decision
    scored: list[ScoredAction]  # every catalog action, best score first


class Recommender:
    """Ranks catalog actions with the propensity model and explains the returned ones."""

    def __init__(
        self,
        encoder: TextEncoder | None,
        scorer: NbaScorer,
        catalog: Sequence[Action] | None = None,
        *,
        seed: int = DEFAULT_SEED,
        permutations: int = DEFAULT_PERMUTATIONS,
        warm: bool = True,
    ) -> None:
        self._catalog = tuple(catalog) if catalog is not None else scorer.catalog
        known = {action_id: i for i, action_id in enumerate(scorer.action_ids)}
        missing = [a.action_id for a in self._catalog if a.action_id not in known]
        if missing:
            raise ConfigError(f"model {scorer.version} cannot score actions {missing}")
        if encoder is not None and scorer.encoder_name and encoder.name != scorer.encoder_name:
            raise ConfigError(
                f"model {scorer.version} was trained on {scorer.encoder_name} embeddings, "
                f"not {encoder.name}"
            )
        if permutations < 1:
            raise ValueError("permutations must be at least 1")
        self._columns = [known[a.action_id] for a in self._catalog]
        self._encoder = encoder
        self._scorer = scorer
        self._seed = seed
        self._permutations = permutations
        if warm:
            warm_up()
            self._scorer.logits(MemoryFeatures.empty(), None)

    @property
    def catalog(self) -> tuple[Action, ...]:
        return self._catalog

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
        """The ``top_n`` best actions that can go out on ``channel``, each explained.

        ``context_embedding`` (384 floats) skips encoding ``context``; without it a non-empty
        context needs the encoder. ``Channel.UNSPECIFIED`` accepts every action.
        """
        return self.decide_audited(
            recalled, context, channel, top_n, now, context_embedding=context_embedding
        ).decision

    def decide_audited(
        self,
        recalled: Sequence[RecalledMemory],
        context: str,
        channel: Channel,
        top_n: int,
        now: datetime,
        *,
        context_embedding: NDArray[Any] | None = None,
    ) -> DecisionAudit:
        """``decide`` plus every catalog action's score and why it was or was not returned."""
        if top_n < 1:
            raise InvalidArgument("top_n", "must be at least 1")
        vector = self._context_vector(context, context_embedding)
        prepared = self._scorer.prepare(MemoryFeatures.from_recalled(recalled, now), vector)
        log_odds = prepared.full_logits()
        scored = []
        for action, column in zip(self._catalog, self._columns, strict=True):
            propensity = sigmoid(float(log_odds[column]))
            eligible = action.can_go_out_on(channel)
            scored.append(
                ScoredAction(
                    action_id=action.action_id,
                    title=action.title,
                    log_odds=float(log_odds[column]),
                    propensity=propensity,
                    value=action.value,
                    score=propensity * action.value,
                    eligible=eligible,
                    reason="" if eligible else f"cannot go out on {channel.name}",
                )
            )
        order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))
        chosen = [i for i in order if scored[i].eligible][:top_n]
        for i in order:
            if scored[i].eligible and i not in chosen:
                scored[i] = replace(scored[i], reason=f"ranked below the top {top_n}")
        explanations = self._explain(prepared, [self._columns[i] for i in chosen])
        actions = [
            self._recommended(rank, self._catalog[i], scored[i], game, recalled, context)
            for rank, (i, game) in enumerate(zip(chosen, explanations, strict=True), start=1)
        ]
        decision = Decision(
            actions=actions, model_version=self._scorer.version, model_sha256=self._scorer.sha256
        )
        return DecisionAudit(decision=decision, scored=[scored[i] for i in order])

    def _context_vector(self, context: str, embedding: NDArray[Any] | None) -> NDArray[Any] | None:
        if embedding is not None:
            return np.asarray(embedding, dtype=np.float32)
        if not context.strip():
            return None
        if self._encoder is None:
            raise ConfigError("a context text needs an encoder or a precomputed embedding")
        vector: NDArray[np.float32] = self._encoder.encode([context])[0]
        return vector

    def _explain(self, prepared: PreparedDecision, columns: list[int]) -> list[GameExplanation]:
        if not columns:
            return []
        n_players = prepared.n_players

        def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
            return prepared.logits(coalitions, columns)

        budget = default_max_evals(n_players, self._permutations)
        return explain_game(game, n_players, seed=self._seed, max_evals=budget)

    def _recommended(
        self,
        rank: int,
        action: Action,
        scored: ScoredAction,
        game: GameExplanation,
        recalled: Sequence[RecalledMemory],
        context: str,
    ) -> RecommendedAction:
        n = len(recalled)
        attributions = [
            MemoryAttribution.of(r.memory, float(game.values[i])) for i, r in enumerate(recalled)
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
            score=scored.score,
            propensity=scored.propensity,
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
