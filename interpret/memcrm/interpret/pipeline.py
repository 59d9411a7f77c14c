"""Interpretation of interactions as they arrive: screen for PII, then understand.

Two phases so that the expensive one can be batched across requests by the service layer:

1. ``screen`` (cheap, per interaction): detect entities and PII on the text, apply the
   tenant's PII policy, and produce the interaction as it will be stored and embedded.
2. ``analyze`` (one encoder pass per text, batched) then ``understand`` (per interaction):
   sentiment, intents and issue from the shared-encoder heads, objections from the same
   embedding, importance from all of it, assembled into the memory's ``Enrichment``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from memcrm.core.tenants import TenantConfig, TenantConfigs
from memcrm.core.types import Enrichment, Entity, Interaction, Label
from memcrm.interpret.entities import EntityDetector
from memcrm.interpret.importance import importance
from memcrm.interpret.objections import DEFAULT_OBJECTIONS, ObjectionClassifier, ObjectionSpec
from memcrm.interpret.pii import PiiPolicy, redact


class HeadOutputs(Protocol):
    """What the shared-encoder model gives for a batch of texts (one encoder pass)."""

    @property
    def model_version(self) -> str: ...
    @property
    def embeddings(self) -> NDArray[np.float32]: ...
    @property
    def sentiment(self) -> Sequence[Label]: ...
    @property
    def sentiment_score(self) -> NDArray[np.float32]: ...
    @property
    def intents(self) -> Sequence[tuple[Label, ...]]: ...
    @property
    def issue(self) -> Sequence[Label | None]: ...


class TextModel(Protocol):
    def run(self, texts: Sequence[str], *, intent_set: str | None = None) -> HeadOutputs: ...


@dataclass(frozen=True)
class Screened:
    """An interaction as it will be stored: PII the tenant redacts is gone from it."""

    interaction: Interaction
    entities: tuple[Entity, ...]
    redactions: tuple[Entity, ...]

    @property
    def model_text(self) -> str:
        """What the encoder reads: subject and body, or a description when there is no text."""
        it = self.interaction
        parts = [p for p in (it.subject.strip(), it.text.strip()) if p]
        if parts:
            return "\n".join(parts)
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(it.attributes.items()))
        return f"{it.channel.name.lower()} {it.direction.name.lower()} {attrs}".strip()


@dataclass(frozen=True)
class Analysis:
    """One text's head outputs."""

    embedding: NDArray[np.float32]
    sentiment: Label
    sentiment_score: float
    intents: tuple[Label, ...]
    issue: Label | None
    model_version: str  # the exact artifacts that produced it


@dataclass(frozen=True)
class Understood:
    enrichment: Enrichment
    embedding: NDArray[np.float32]


@dataclass(frozen=True)
class _TenantTools:
    version: str
    detector: EntityDetector
    policy: PiiPolicy
    objections: ObjectionClassifier | None
    issues: bool


class Interpreter:
    def __init__(self, model: TextModel, tenants: TenantConfigs) -> None:
        self._model = model
        self._tenants = tenants
        self._tools: dict[str, _TenantTools] = {}
        self._lock = threading.Lock()

    def intent_set(self, tenant_id: str) -> str:
        return self._tenants.get(tenant_id).intents.set

    def _tools_for(self, tenant_id: str) -> _TenantTools:
        config = self._tenants.get(tenant_id)
        with self._lock:
            tools = self._tools.get(tenant_id)
            if tools is None or tools.version != config.version:
                tools = self._build_tools(config)
                self._tools[tenant_id] = tools
            return tools

    def _build_tools(self, config: TenantConfig) -> _TenantTools:
        if config.objections is None:
            specs: tuple[ObjectionSpec, ...] = DEFAULT_OBJECTIONS
        else:
            specs = tuple(
                ObjectionSpec(o.label, o.description, tuple(o.examples)) for o in config.objections
            )
        classifier = (
            ObjectionClassifier(specs, lambda texts: self._model.run(texts).embeddings)
            if specs
            else None
        )
        return _TenantTools(
            version=config.version,
            detector=EntityDetector.for_tenant(config),
            policy=PiiPolicy.from_config(config.pii),
            objections=classifier,
            issues=config.issues.enabled,
        )

    def redacted_text(self, tenant_id: str, text: str) -> str:
        """``text`` under the tenant's PII policy, as it would be stored and embedded (what a
        decision keeps of its current message)."""
        tools = self._tools_for(tenant_id)
        return redact(text, tools.detector.detect(text), tools.policy).text

    def screen(self, tenant_id: str, interaction: Interaction) -> Screened:
        tools = self._tools_for(tenant_id)
        body = redact(interaction.text, tools.detector.detect(interaction.text), tools.policy)
        subject = redact(
            interaction.subject, tools.detector.detect(interaction.subject), tools.policy
        )
        stored = replace(interaction, text=body.text, subject=subject.text)
        return Screened(stored, tuple(body.entities), tuple(body.redactions))

    def analyze(self, texts: Sequence[str], intent_set: str) -> list[Analysis]:
        """One batched pass of the shared encoder and its heads."""
        if not texts:
            return []
        out = self._model.run(texts, intent_set=intent_set)
        return [
            Analysis(
                embedding=np.asarray(out.embeddings[i], dtype=np.float32),
                sentiment=out.sentiment[i],
                sentiment_score=float(out.sentiment_score[i]),
                intents=tuple(out.intents[i]),
                issue=out.issue[i],
                model_version=out.model_version,
            )
            for i in range(len(texts))
        ]

    def analyze_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Analysis]]:
        """Several requests' texts in one pass per intent set: batching across requests."""
        results: list[list[Analysis]] = [[] for _ in requests]
        by_set: dict[str, list[int]] = {}
        for n, (intent_set, _) in enumerate(requests):
            by_set.setdefault(intent_set, []).append(n)
        for intent_set, members in by_set.items():
            texts = [t for n in members for t in requests[n][1]]
            analyses = self.analyze(texts, intent_set)
            at = 0
            for n in members:
                size = len(requests[n][1])
                results[n] = analyses[at : at + size]
                at += size
        return results

    def understand(
        self, tenant_id: str, screened: Sequence[Screened], analyses: Sequence[Analysis]
    ) -> list[Understood]:
        tools = self._tools_for(tenant_id)
        if len(screened) != len(analyses):
            raise ValueError("one analysis per screened interaction")
        if not screened:
            return []
        embeddings = np.stack([a.embedding for a in analyses])
        objections = (
            tools.objections.classify(embeddings)
            if tools.objections is not None
            else [() for _ in screened]
        )
        understood = []
        for s, a, raised in zip(screened, analyses, objections, strict=True):
            it = s.interaction
            issue = a.issue if tools.issues else None
            enrichment = Enrichment(
                model_version=f"{a.model_version}+tenant-config-{tools.version}",
                sentiment=a.sentiment,
                sentiment_score=a.sentiment_score,
                intents=a.intents,
                issue=issue,
                entities=s.entities,
                objections=tuple(raised),
                topics=(issue.name,) if issue is not None else (),
                importance=importance(
                    sentiment=a.sentiment,
                    issue=issue,
                    objections=raised,
                    entities=s.entities,
                    channel=it.channel,
                    direction=it.direction,
                ),
                redactions=s.redactions,
            )
            understood.append(Understood(enrichment, a.embedding))
        return understood

    def interpret(self, tenant_id: str, screened: Sequence[Screened]) -> list[Understood]:
        analyses = self.analyze([s.model_text for s in screened], self.intent_set(tenant_id))
        return self.understand(tenant_id, screened, analyses)
