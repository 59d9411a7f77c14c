"""The next-best-action propensity network: a DeepSets model over a customer's memories.

Why a set model: an explanation removes memories from the input, so "memory absent" must mean
"memory not in the set", not "memory replaced by some baseline". Each memory is encoded on its
own (text embedding, age, channel, direction and, optionally, its enrichment), the encodings
are summed over the memories that are present (a boolean mask), and a head conditioned on each
catalog action turns the pooled set plus the current context into one log-odds per action.
With no memory present the pooled sum is the zero vector, so the empty set has a well-defined
output. Sum (not mean) pooling keeps counts: two recent complaints weigh more than one.
``asinh`` on the pooled sum bounds the growth for sets larger than those seen in training while
staying close to linear near zero.

Optional profile features (:class:`ProfileSpec`): a small tabular tower turns a customer's
profile (numeric features, standardized inside the network with statistics stored as buffers,
plus one learned embedding per categorical feature, index 0 = unknown) into one more term of
the head, beside the pooled memories and the context. The profile is not a player of an
explanation: it is present in every coalition, so SHAP values still split the memories' and
the context's effect. A network built without a ``ProfileSpec`` has no tower, exactly the
parameters (and state dict) it had before the tower existed, and refuses profile inputs; one
built with a spec requires them. With empty memory sets and no context the same network and
training loop are a plain tabular propensity model (``memcrm.models.eval_nba`` trains one on
the Telco churn data set).

Optional enrichment features (:class:`EnrichmentSpec`): what the interpretation pipeline
understood from each memory (``memcrm.core.types.Enrichment``), as ``ENRICHMENT_FEATURES``
numbers per memory, computed by :func:`enrichment_vector`:

    enriched              1 when the memory carries an enrichment with a sentiment, else 0
                          (then every other column is 0 too: "not known", never "neutral")
    sentiment:<label>     the sentiment head's confidence in its label, one column per label
                          of the shipped head (negative, neutral, positive); 0 for the others
    sentiment_score       P(positive) - P(negative), in -1..1
    issue:<label>         the issue's confidence, one column per airline issue label of the
                          shipped issue head; ``issue:other`` for a label outside that list
                          (a tenant's own issue set); all 0 without an issue
    importance            the pipeline's importance rule (0..1): folds in what the other
                          columns do not carry (objections, commitments such as money or an
                          order number, the channel's effort, outbound halved)

Left out on purpose: intents (a tenant-chosen label set, Banking77 by default, not about
airline journeys), objections and entities one by one (tenant-configurable label sets; their
effect on weight reaches the network through ``importance``), topics (today the issue's name
again) and the model version. The columns enter the memory encoder's first layer through their
own linear map (``enrichment_proj``), which is the same function as widening that layer's input,
so a memory is still encoded on its own and removing it from the set still removes all of it.
A network built without an ``EnrichmentSpec`` has no such map and exactly its old parameters
(and state dict), and ignores enrichment inputs: enrichment describes the memories, not the
model, so serving always passes it and an older artifact simply does not read it. A network
built with one reads ``None`` as "not known" for every memory (all zeros) and, in training,
hides a memory's enrichment with probability ``EnrichmentSpec.dropout`` so that memories stored
without enrichment (older data, disabled heads) fall back on their text, and so that it does
not trust in-sample enrichment more than unseen texts deserve (``memcrm.models.train_nba``).
The current context (the message being decided on) is not a stored memory and has no
enrichment: it stays embedding-only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from memcrm.core.types import EMBEDDING_DIM, Channel, Direction, Enrichment

AGE_SCALES_DAYS = (7.0, 30.0, 90.0, 365.0)
N_AGE_FEATURES = len(AGE_SCALES_DAYS) + 1
# Training histories span a year; anything older is presented as a year old rather than
# extrapolated (with a 30-day causal half-life a year-old interaction carries no signal).
MAX_AGE_DAYS = 365.0

# The shipped enrichment heads' label sets (``artifacts/enrichment/enrich.json``), in their order.
SENTIMENT_LABELS = ("negative", "neutral", "positive")
ISSUE_LABELS = (
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
ENRICHMENT_FEATURES: tuple[str, ...] = (
    "enriched",
    *(f"sentiment:{label}" for label in SENTIMENT_LABELS),
    "sentiment_score",
    *(f"issue:{label}" for label in ISSUE_LABELS),
    "issue:other",
    "importance",
)
N_ENRICHMENT_FEATURES = len(ENRICHMENT_FEATURES)
_SENTIMENT_COLUMN = {label: 1 + i for i, label in enumerate(SENTIMENT_LABELS)}
_SCORE_COLUMN = 1 + len(SENTIMENT_LABELS)
_ISSUE_COLUMN = {label: _SCORE_COLUMN + 1 + i for i, label in enumerate(ISSUE_LABELS)}
_OTHER_ISSUE_COLUMN = _SCORE_COLUMN + 1 + len(ISSUE_LABELS)
_IMPORTANCE_COLUMN = _OTHER_ISSUE_COLUMN + 1


def _unit(value: float, low: float = 0.0) -> float:
    return min(max(float(value), low), 1.0) if math.isfinite(value) else 0.0


def enrichment_vector(enrichment: Enrichment | None) -> list[float]:
    """One memory's ``ENRICHMENT_FEATURES`` (see the module docstring); all zeros when the
    memory has no enrichment or its enrichment has no sentiment (it was never interpreted)."""
    row = [0.0] * N_ENRICHMENT_FEATURES
    if enrichment is None or enrichment.sentiment is None:
        return row
    row[0] = 1.0
    sentiment = enrichment.sentiment
    column = _SENTIMENT_COLUMN.get(sentiment.name)
    if column is not None:
        row[column] = _unit(sentiment.confidence)
    row[_SCORE_COLUMN] = _unit(enrichment.sentiment_score, -1.0)
    issue = enrichment.issue
    if issue is not None:
        row[_ISSUE_COLUMN.get(issue.name, _OTHER_ISSUE_COLUMN)] = _unit(issue.confidence)
    row[_IMPORTANCE_COLUMN] = _unit(enrichment.importance)
    return row


@dataclass(frozen=True, slots=True)
class NbaHyperParams:
    text_dim: int = 64
    memory_hidden: int = 96
    hidden: int = 64
    head_hidden: int = 128
    channel_dim: int = 8
    direction_dim: int = 4
    text_dropout: float = 0.1  # training only: eval() turns it off

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NbaHyperParams:
        defaults = asdict(cls())
        return cls(**{key: type(defaults[key])(raw[key]) for key in defaults if key in raw})


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """The shape of the optional profile-feature input (see the module docstring).

    ``cardinalities[i]`` is the number of codes of categorical feature ``i`` including code 0,
    which stands for a value not seen when the encoding was fitted.
    """

    n_numeric: int
    cardinalities: tuple[int, ...]
    embedding_dim: int = 4
    hidden: int = 32
    dropout: float = 0.0  # training only: eval() turns it off

    def __post_init__(self) -> None:
        if self.n_numeric < 0 or any(c < 1 for c in self.cardinalities):
            raise ValueError("n_numeric must be >= 0 and every cardinality >= 1")
        if self.n_numeric == 0 and not self.cardinalities:
            raise ValueError("a profile needs at least one feature")

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["cardinalities"] = list(self.cardinalities)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProfileSpec:
        return cls(
            n_numeric=int(raw["n_numeric"]),
            cardinalities=tuple(int(c) for c in raw["cardinalities"]),
            embedding_dim=int(raw.get("embedding_dim", 4)),
            hidden=int(raw.get("hidden", 32)),
            dropout=float(raw.get("dropout", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class EnrichmentSpec:
    """The optional per-memory enrichment input (see the module docstring).

    ``features`` names the columns, in order; a network only loads when they equal this code's
    ``ENRICHMENT_FEATURES`` (``memcrm.models.nba`` checks the manifest). ``dropout`` is the
    training-time probability of hiding one memory's enrichment (eval() turns it off).
    """

    features: tuple[str, ...] = ENRICHMENT_FEATURES
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.features or len(set(self.features)) != len(self.features):
            raise ValueError("enrichment features must be distinct and at least one")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("enrichment dropout must be in [0, 1)")

    @property
    def width(self) -> int:
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "dropout": self.dropout}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EnrichmentSpec:
        return cls(
            features=tuple(str(name) for name in raw["features"]),
            dropout=float(raw.get("dropout", 0.0)),
        )


class ProfileTower(nn.Module):
    """Profile features -> (..., out_dim): standardized numerics and categorical embeddings."""

    numeric_mean: Tensor
    numeric_scale: Tensor

    def __init__(self, spec: ProfileSpec, out_dim: int) -> None:
        super().__init__()
        self.spec = spec
        # Set from the training data with ``set_scaling``; saved in the state dict.
        self.register_buffer("numeric_mean", torch.zeros(spec.n_numeric))
        self.register_buffer("numeric_scale", torch.ones(spec.n_numeric))
        dims = [min(spec.embedding_dim, cardinality) for cardinality in spec.cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(cardinality, dim)
            for cardinality, dim in zip(spec.cardinalities, dims, strict=True)
        )
        width = spec.n_numeric + sum(dims)
        self.mlp = nn.Sequential(
            nn.Linear(width, spec.hidden),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, out_dim),
        )

    def set_scaling(self, mean: Tensor, scale: Tensor) -> None:
        """Numeric features are fed raw; the tower computes ``(x - mean) / scale``."""
        if mean.shape != (self.spec.n_numeric,) or scale.shape != (self.spec.n_numeric,):
            raise ValueError(f"mean and scale must be ({self.spec.n_numeric},)")
        if not bool(torch.all(scale > 0)):
            raise ValueError("every scale must be positive")
        self.numeric_mean.copy_(mean)
        self.numeric_scale.copy_(scale)

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        """(..., n_numeric) float, (..., n_categorical) long -> (..., out_dim)."""
        if numeric.shape[-1] != self.spec.n_numeric:
            raise ValueError(f"expected {self.spec.n_numeric} numeric profile features")
        if categorical.shape[-1] != len(self.embeddings):
            raise ValueError(f"expected {len(self.embeddings)} categorical profile features")
        dtype = self.numeric_mean.dtype
        parts = [(numeric.to(dtype) - self.numeric_mean) / self.numeric_scale]
        parts += [emb(categorical[..., i]) for i, emb in enumerate(self.embeddings)]
        encoded: Tensor = self.mlp(torch.cat(parts, dim=-1))
        return encoded


def fast_asinh(x: Tensor) -> Tensor:
    """``torch.asinh`` from vectorised operations, sign(x) log1p(a + a (a / (1 + hypot(1, a))))
    with a = |x|: no cancellation near zero, no overflow for large |x| (up to 8e307). On CPU
    ``torch.asinh`` runs a scalar loop: 0.75 ms for a SHAP game's 670 x 96 float64 values on
    this project's machine, 0.31 ms here; the two agree to a few units in the last place."""
    a = x.abs()
    half = a / (1.0 + torch.hypot(torch.ones_like(a), a))
    return torch.copysign(torch.log1p(a + a * half), x)


def age_features(age_days: Tensor) -> Tensor:
    """Recency at several time scales plus a log age: (...,) days -> (..., N_AGE_FEATURES)."""
    age = age_days.clamp(0.0, MAX_AGE_DAYS)
    features = [torch.exp(-age / scale) for scale in AGE_SCALES_DAYS]
    features.append(torch.log1p(age) / math.log1p(MAX_AGE_DAYS))
    return torch.stack(features, dim=-1)


class NbaNet(nn.Module):
    """P(success | memories, context, action) as log-odds for every catalog action at once."""

    action_text: Tensor

    def __init__(
        self,
        action_text: Tensor,
        hp: NbaHyperParams | None = None,
        profile: ProfileSpec | None = None,
        enrichment: EnrichmentSpec | None = None,
    ) -> None:
        super().__init__()
        hp = hp or NbaHyperParams()
        if action_text.ndim != 2 or action_text.shape[1] != EMBEDDING_DIM:
            raise ValueError(f"action_text must be (n_actions, {EMBEDDING_DIM})")
        n_actions = int(action_text.shape[0])
        self.hp = hp
        self.n_actions = n_actions
        # The encoder's embedding of each action's title and description, shipped in the state
        # dict so serving needs no encoder call for the catalog.
        self.register_buffer("action_text", action_text.detach().clone().float())
        self.text_dropout = nn.Dropout(hp.text_dropout)
        self.text_proj = nn.Linear(EMBEDDING_DIM, hp.text_dim)
        self.channel_emb = nn.Embedding(len(Channel), hp.channel_dim)
        self.direction_emb = nn.Embedding(len(Direction), hp.direction_dim)
        memory_in = hp.text_dim + N_AGE_FEATURES + hp.channel_dim + hp.direction_dim
        self.memory_mlp = nn.Sequential(
            nn.Linear(memory_in, hp.memory_hidden),
            nn.ReLU(),
            nn.Linear(hp.memory_hidden, hp.hidden),
        )
        self.context_mlp = nn.Sequential(
            nn.Linear(EMBEDDING_DIM, hp.memory_hidden),
            nn.ReLU(),
            nn.Linear(hp.memory_hidden, hp.hidden),
        )
        self.action_proj = nn.Linear(EMBEDDING_DIM, hp.hidden)
        self.action_id_emb = nn.Embedding(n_actions, hp.hidden)
        self.head_set = nn.Linear(hp.hidden, hp.head_hidden)
        self.head_context = nn.Linear(hp.hidden, hp.head_hidden, bias=False)
        self.head_action = nn.Linear(hp.hidden, hp.head_hidden, bias=False)
        self.head_out = nn.Sequential(
            nn.ReLU(),
            nn.Linear(hp.head_hidden, hp.head_hidden // 2),
            nn.ReLU(),
            nn.Linear(hp.head_hidden // 2, 1),
        )
        # Created last so that a network without profile features initialises (and trains)
        # exactly as it did before the tower existed.
        self.profile_spec = profile
        self.profile: ProfileTower | None = None
        self.head_profile: nn.Linear | None = None
        if profile is not None:
            self.profile = ProfileTower(profile, hp.hidden)
            self.head_profile = nn.Linear(hp.hidden, hp.head_hidden, bias=False)
        # After the profile tower for the same reason: without a spec nothing changes.
        self.enrichment_spec = enrichment
        self.enrichment_proj: nn.Linear | None = None
        if enrichment is not None:
            self.enrichment_proj = nn.Linear(enrichment.width, hp.memory_hidden, bias=False)

    def encode_memories(
        self,
        embeddings: Tensor,
        ages_days: Tensor,
        channels: Tensor,
        directions: Tensor,
        enrichment: Tensor | None = None,
    ) -> Tensor:
        """(..., M, 384), (..., M), (..., M) long, (..., M) long -> (..., M, hidden).

        ``enrichment`` (..., M, n_enrichment) is read only by a network with an
        ``EnrichmentSpec`` (None there = not known for any memory) and ignored otherwise.
        """
        parts = [
            self.text_proj(self.text_dropout(embeddings)),
            age_features(ages_days).to(embeddings.dtype),
            self.channel_emb(channels),
            self.direction_emb(directions),
        ]
        features = torch.cat(parts, dim=-1)
        if self.enrichment_proj is None:
            encoded: Tensor = self.memory_mlp(features)
            return encoded
        first, rest = self.memory_mlp[0], self.memory_mlp[1:]
        pre = first(features) + self.enrichment_proj(self._enrichment(enrichment, features))
        projected: Tensor = rest(pre)
        return projected

    def _enrichment(self, enrichment: Tensor | None, features: Tensor) -> Tensor:
        """The enrichment input checked, as ``features``' dtype, hidden in training with
        probability ``EnrichmentSpec.dropout`` per memory; None -> zeros (not known)."""
        assert self.enrichment_spec is not None
        spec = self.enrichment_spec
        if enrichment is None:
            return features.new_zeros((*features.shape[:-1], spec.width))
        if enrichment.shape[-1] != spec.width or enrichment.shape[:-1] != features.shape[:-1]:
            raise ValueError(f"enrichment must be (..., {features.shape[-2]}, {spec.width})")
        enrichment = enrichment.to(features.dtype)
        if self.training and spec.dropout > 0.0:
            kept = torch.rand(enrichment.shape[:-1], device=enrichment.device) >= spec.dropout
            enrichment = enrichment * kept.unsqueeze(-1).to(enrichment.dtype)
        return enrichment

    def encode_context(self, context: Tensor) -> Tensor:
        """(..., 384) -> (..., hidden)."""
        encoded: Tensor = self.context_mlp(self.text_dropout(context))
        return encoded

    def encode_profile(self, numeric: Tensor | None, categorical: Tensor | None) -> Tensor | None:
        """Profile features -> (..., hidden), or None for a network without profile features.

        Raises ``ValueError`` when the inputs do not match the network: a network built with a
        ``ProfileSpec`` needs both tensors, one built without refuses them.
        """
        if self.profile is None:
            if numeric is not None or categorical is not None:
                raise ValueError("this network was built without profile features")
            return None
        if numeric is None or categorical is None:
            raise ValueError("this network needs profile features (numeric and categorical)")
        encoded: Tensor = self.profile(numeric, categorical)
        return encoded

    def action_vectors(self, actions: Tensor | None = None) -> Tensor:
        """(n_actions or len(actions), hidden): projected action text plus a learned vector."""
        ids = torch.arange(self.n_actions, device=self.action_text.device)
        if actions is not None:
            ids = ids[actions]
        text = self.action_text[ids].to(self.action_proj.weight.dtype)
        vectors: Tensor = self.action_proj(text)
        learned: Tensor = self.action_id_emb(ids)
        return vectors + learned

    def score(
        self,
        pooled: Tensor,
        context: Tensor,
        actions: Tensor | None = None,
        profile: Tensor | None = None,
    ) -> Tensor:
        """Pooled memory sum (B, hidden) and masked context encoding (B, hidden) -> (B, A).

        ``actions`` (long indices) restricts the head to those catalog actions, in that order;
        ``profile`` is the ``encode_profile`` output, (B, hidden) or (1, hidden).
        """
        return self.score_with(pooled, context, self.action_terms(actions), profile)

    def action_terms(self, actions: Tensor | None = None) -> Tensor:
        """The head's per-action term (A, head_hidden); constant for a given model."""
        terms: Tensor = self.head_action(self.action_vectors(actions))
        return terms

    def score_with(
        self, pooled: Tensor, context: Tensor, action_terms: Tensor, profile: Tensor | None = None
    ) -> Tensor:
        """``score`` with precomputed ``action_terms`` (serving reuses them across calls)."""
        per_decision = self.head_set(torch.asinh(pooled)) + self.head_context(context)
        if (profile is None) != (self.head_profile is None):
            raise ValueError(
                "profile encoding given to a network without profile features"
                if profile is not None
                else "this network needs the profile encoding"
            )
        if self.head_profile is not None and profile is not None:
            per_decision = per_decision + self.head_profile(profile)
        hidden = per_decision.unsqueeze(1) + action_terms.unsqueeze(0)
        logits: Tensor = self.head_out(hidden).squeeze(-1)
        return logits

    def decision_terms(self, context: Tensor, profile: Tensor | None = None) -> Tensor:
        """The head's per-decision term of ``context`` (..., hidden) and, for a network with
        profile features, the ``encode_profile`` output: what ``score_with`` adds to the
        memories' term before the action terms."""
        terms: Tensor = self.head_context(context)
        if (profile is None) != (self.head_profile is None):
            raise ValueError(
                "profile encoding given to a network without profile features"
                if profile is not None
                else "this network needs the profile encoding"
            )
        if self.head_profile is not None and profile is not None:
            terms = terms + self.head_profile(profile)
        return terms

    def score_prepared(
        self, pooled: Tensor, decision_terms: Tensor, action_terms: Tensor
    ) -> Tensor:
        """``score_with`` for serving, with the per-decision terms (``decision_terms``,
        (B, head_hidden) or (1, head_hidden)) computed beforehand: a SHAP game's coalitions
        share the profile and have the context either absent or present, so two rows of terms
        serve them all. ``asinh`` and the activations run as vectorised, in-place operations
        (``torch.asinh`` is a scalar loop on CPU). Same function as ``score_with``; in float64
        the two agree to ~1e-15 (additions associate differently, ``fast_asinh`` rounds
        differently). Training keeps ``score_with``, so trained weights do not depend on this.
        """
        per_decision = self.head_set(fast_asinh(pooled)).add_(decision_terms)
        hidden = (per_decision.unsqueeze(1) + action_terms.unsqueeze(0)).relu_()
        first, last = self.head_out[1], self.head_out[3]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        rows = hidden.reshape(-1, hidden.shape[-1])
        inner = torch.addmm(first.bias, rows, first.weight.t()).relu_()
        logits = torch.addmm(last.bias, inner, last.weight.t())
        return logits.view(hidden.shape[0], hidden.shape[1])

    def forward(
        self,
        embeddings: Tensor,
        ages_days: Tensor,
        channels: Tensor,
        directions: Tensor,
        mask: Tensor,
        context: Tensor,
        context_mask: Tensor,
        profile_numeric: Tensor | None = None,
        profile_categorical: Tensor | None = None,
        enrichment: Tensor | None = None,
    ) -> Tensor:
        """Batched decisions or coalitions -> log-odds (B, n_actions).

        embeddings (B, M, 384), ages_days (B, M), channels/directions (B, M) long,
        mask (B, M) bool (True = memory present), context (B, 384), context_mask (B,) bool;
        for a network with profile features also profile_numeric (B, n_numeric) float and
        profile_categorical (B, n_categorical) long; ``enrichment`` (B, M, n_enrichment) float
        (see ``encode_memories``).
        """
        profile = self.encode_profile(profile_numeric, profile_categorical)
        encoded = self.encode_memories(embeddings, ages_days, channels, directions, enrichment)
        pooled = (encoded * mask.unsqueeze(-1).to(encoded.dtype)).sum(dim=1)
        ctx = self.encode_context(context) * context_mask.unsqueeze(-1).to(encoded.dtype)
        return self.score(pooled, ctx, profile=profile)
