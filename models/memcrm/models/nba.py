"""Serving the shipped next-best-action propensity model, and its artifact format.

An artifact is two files in one directory: ``<name>.pt`` (a torch state dict of
:class:`~memcrm.models.nba_net.NbaNet`) and ``<name>.json`` (the manifest: version, sha256 of the
``.pt``, catalog, hyperparameters, seed, training data and metrics). ``NbaScorer`` checks the
sha256 before it unpickles anything, so a corrupted or swapped weights file fails loudly at
start-up instead of serving different numbers under the same version.

A network with profile features (``nba_net.ProfileSpec``) records the spec under the manifest's
``profile`` key; ``NbaScorer`` then builds the profile tower and every scoring call takes a
:class:`ProfileFeatures`. Without that key (the shipped airline model) nothing changes and the
profile arguments must stay ``None``. Likewise an ``enrichment`` key (``nba_net.EnrichmentSpec``)
makes the network read each memory's enrichment features (``MemoryFeatures.enrichment``); an
artifact without it (trained before they existed) loads, ignores them and scores as it did.

Scoring precision (``ScoringPrecision``): the network is trained in float32 and served in float32
by default (``MEMCRM_SCORING_PRECISION``). A SHAP game scores ~670 coalitions of a 32-memory
decision for each explained action, and in float32 that batch costs half what it does in float64
(1.5 vs 3.4 ms on this project's machine). float64 remains available: it is what every decision
was scored in before the precision was recorded, so replaying those needs it. In either precision
equal inputs give bit-identical outputs; what a coalition's output depends on is the shape of the
forward pass it is part of (matrix-product kernels are chosen by size), at the 1e-7 level in
float32 and 1e-15 in float64, both far inside the 1e-4 SHAP additivity contract.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from memcrm.core.errors import ConfigError
from memcrm.core.types import EMBEDDING_DIM, RecalledMemory
from memcrm.decisions.catalog import BUILTIN_CATALOG, Action, catalog_fingerprint
from memcrm.models.nba_net import (
    ENRICHMENT_FEATURES,
    N_ENRICHMENT_FEATURES,
    EnrichmentSpec,
    NbaHyperParams,
    NbaNet,
    ProfileSpec,
    enrichment_vector,
)

ARTIFACT_NAME = "nba"
MANIFEST_FORMAT = 1
SECONDS_PER_DAY = 86_400.0

# The arithmetic a decision is scored and explained in; recorded with each decision.
ScoringPrecision = Literal["float32", "float64"]
SCORING_DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_SCORING_PRECISION: ScoringPrecision = "float32"


def as_scoring_precision(value: str) -> ScoringPrecision | None:
    """``value`` as a ``ScoringPrecision``; None when it names none (e.g. a record's field)."""
    if value == "float32":
        return "float32"
    if value == "float64":
        return "float64"
    return None


def default_artifact_dir() -> Path:
    return Path(__file__).resolve().parent / "artifacts"


class ArtifactIntegrityError(ConfigError):
    """The model artifact is missing, does not match its manifest, or does not fit the catalog."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _no_enrichment() -> NDArray[np.float32]:
    return np.zeros((0, N_ENRICHMENT_FEATURES), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class MemoryFeatures:
    """The model's view of a set of memories: one row per memory.

    ``enrichment`` holds each memory's ``nba_net.ENRICHMENT_FEATURES`` (what interpretation
    understood from it, ``nba_net.enrichment_vector``); left out, it is all zeros, "not known".
    A network without enrichment features ignores it.
    """

    embeddings: NDArray[np.float32]  # (M, EMBEDDING_DIM)
    ages_days: NDArray[np.float64]  # (M,)
    channels: NDArray[np.int64]  # (M,) Channel values
    directions: NDArray[np.int64]  # (M,) Direction values
    enrichment: NDArray[np.float32] = field(default_factory=_no_enrichment)  # (M, n_enrichment)

    def __post_init__(self) -> None:
        m = self.embeddings.shape[0]
        if self.embeddings.shape != (m, EMBEDDING_DIM):
            raise ValueError(f"embeddings must be (n_memories, {EMBEDDING_DIM})")
        for name in ("ages_days", "channels", "directions"):
            if getattr(self, name).shape != (m,):
                raise ValueError(f"{name} must be ({m},)")
        if self.enrichment.shape == (0, N_ENRICHMENT_FEATURES) and m:
            object.__setattr__(self, "enrichment", np.zeros((m, N_ENRICHMENT_FEATURES), np.float32))
        if self.enrichment.shape != (m, N_ENRICHMENT_FEATURES):
            raise ValueError(f"enrichment must be ({m}, {N_ENRICHMENT_FEATURES})")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @classmethod
    def empty(cls) -> MemoryFeatures:
        return cls(
            embeddings=np.zeros((0, EMBEDDING_DIM), dtype=np.float32),
            ages_days=np.zeros(0, dtype=np.float64),
            channels=np.zeros(0, dtype=np.int64),
            directions=np.zeros(0, dtype=np.int64),
        )

    @classmethod
    def from_recalled(cls, recalled: Sequence[RecalledMemory], now: datetime) -> MemoryFeatures:
        """Ages are ``now - occurred_at`` in days (never negative); naive times count as UTC.

        The enrichment columns come from each memory's stored ``Enrichment``.
        """
        if not recalled:
            return cls.empty()
        now_utc = _as_utc(now)
        ages = [
            max((now_utc - _as_utc(r.memory.interaction.occurred_at)).total_seconds(), 0.0)
            / SECONDS_PER_DAY
            for r in recalled
        ]
        return cls(
            embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in recalled]),
            ages_days=np.asarray(ages, dtype=np.float64),
            channels=np.asarray([int(r.memory.interaction.channel) for r in recalled], np.int64),
            directions=np.asarray(
                [int(r.memory.interaction.direction) for r in recalled], np.int64
            ),
            enrichment=np.asarray(
                [enrichment_vector(r.memory.enrichment) for r in recalled], np.float32
            ),
        )


@dataclass(frozen=True, slots=True)
class ProfileFeatures:
    """One customer's profile for a network with profile features (see ``ProfileSpec``).

    ``numeric`` holds raw values (the network standardizes them); ``categorical`` holds codes,
    0 for a value the encoding has not seen.
    """

    numeric: NDArray[np.float64]  # (n_numeric,)
    categorical: NDArray[np.int64]  # (n_categorical,)

    def __post_init__(self) -> None:
        if self.numeric.ndim != 1 or self.categorical.ndim != 1:
            raise ValueError("profile features are one row: 1-d numeric and categorical arrays")

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(numeric float64, categorical long) tensors."""
        return (
            torch.from_numpy(np.asarray(self.numeric, dtype=np.float64)),
            torch.from_numpy(np.asarray(self.categorical, dtype=np.int64)),
        )


def _profile_tensors(
    profile: ProfileFeatures | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (None, None) if profile is None else profile.tensors()


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class PreparedDecision:
    """One decision's memories and context encoded once; coalitions then cost one matmul.

    Player ``i < n_memories`` is memory ``i``; player ``n_memories`` is the current context.
    Coalitions that mean the same input (duplicates, or differing only in an absent context)
    are scored once, so they get bit-identical outputs and a player that cannot change the
    input gets a SHAP value of exactly zero. Profile features, for a network that has them,
    are present in every coalition (they are not a player).

    Scores in the dtype of ``net``'s parameters (``NbaScorer`` holds one copy per
    ``ScoringPrecision``); log-odds come back as float64 arrays either way.
    """

    def __init__(
        self,
        net: NbaNet,
        memories: MemoryFeatures,
        context: NDArray[Any] | None,
        profile: ProfileFeatures | None = None,
    ):
        self.n_memories = len(memories)
        self.n_players = self.n_memories + 1
        self.has_context = context is not None
        self._net = net
        self.dtype = dtype = net.head_set.weight.dtype
        with torch.inference_mode():
            encoded_profile = net.encode_profile(*_profile_tensors(profile))
            profile_row = None if encoded_profile is None else encoded_profile.unsqueeze(0)
            self._encoded = net.encode_memories(
                torch.from_numpy(memories.embeddings).to(dtype),
                torch.from_numpy(memories.ages_days).to(dtype),
                torch.from_numpy(memories.channels),
                torch.from_numpy(memories.directions),
                torch.from_numpy(memories.enrichment).to(dtype),
            )
            absent = torch.zeros(net.hp.hidden, dtype=dtype)
            present = absent
            if context is not None:
                vector = np.asarray(context, dtype=np.float64).reshape(EMBEDDING_DIM)
                present = net.encode_context(torch.from_numpy(vector).to(dtype))
            # Row 0: the context absent from the coalition, row 1: present.
            self._decision_terms = net.decision_terms(torch.stack([absent, present]), profile_row)
            self._action_terms = net.action_terms()

    def logits(
        self, coalitions: NDArray[np.bool_], actions: Sequence[int] | None = None
    ) -> NDArray[np.float64]:
        """(n, n_players) bool -> log-odds (n, n_actions), or (n, len(actions)) for a subset.

        ``actions`` are catalog indices; the head then runs only for them (the cost of an
        explanation is dominated by the head, so explaining 3 of 6 actions halves it).
        """
        mask = np.array(coalitions, dtype=bool)
        if mask.ndim != 2 or mask.shape[1] != self.n_players:
            raise ValueError(f"coalitions must be (n, {self.n_players}) booleans")
        if not self.has_context:
            mask[:, self.n_memories] = False
        packed = np.ascontiguousarray(np.packbits(mask, axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        unique = mask[first]
        with torch.inference_mode():
            present = torch.from_numpy(unique[:, : self.n_memories]).to(self.dtype)
            pooled = present @ self._encoded
            with_context = torch.from_numpy(unique[:, self.n_memories].astype(np.int64))
            terms = self._action_terms if actions is None else self._action_terms[list(actions)]
            out = self._net.score_prepared(pooled, self._decision_terms[with_context], terms)
        result: NDArray[np.float64] = out.numpy().astype(np.float64)[inverse.reshape(-1)]
        return result

    def full_logits(self) -> NDArray[np.float64]:
        """Log-odds (n_actions,) with every memory and the context present."""
        row: NDArray[np.float64] = self.logits(np.ones((1, self.n_players), dtype=bool))[0]
        return row

    def ends(self) -> NDArray[np.float64]:
        """Log-odds (2, n_actions) with every player absent (row 0) and present (row 1), in one
        forward pass: a decision ranks on row 1 and hands both rows to its explanations as
        their base and output values, so the numbers it reports are the same numbers."""
        coalitions = np.stack([np.zeros(self.n_players, bool), np.ones(self.n_players, bool)])
        return self.logits(coalitions)


class NbaScorer:
    """The shipped propensity model, loaded from a verified artifact."""

    def __init__(
        self,
        artifact_dir: Path | str | None = None,
        *,
        name: str = ARTIFACT_NAME,
        catalog: Sequence[Action] = BUILTIN_CATALOG,
    ) -> None:
        directory = Path(artifact_dir) if artifact_dir is not None else default_artifact_dir()
        manifest_path = directory / f"{name}.json"
        weights_path = directory / f"{name}.pt"
        if not manifest_path.is_file() or not weights_path.is_file():
            raise ArtifactIntegrityError(
                f"model artifact {name!r} not found in {directory} "
                "(run `python -m memcrm.models.train_nba`)"
            )
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = str(manifest.get("sha256", ""))
        actual = file_sha256(weights_path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"model artifact {weights_path} has sha256 {actual} but its manifest says "
                f"{expected or '(nothing)'}; refusing to load"
            )
        ids = [entry["action_id"] for entry in manifest["catalog"]]
        if ids != [a.action_id for a in catalog]:
            raise ArtifactIntegrityError(
                f"model {manifest['version']} was trained for actions {ids}, "
                f"not {[a.action_id for a in catalog]}"
            )
        if manifest.get("catalog_fingerprint") != catalog_fingerprint(catalog):
            raise ArtifactIntegrityError(
                f"the catalog's titles or descriptions changed since model {manifest['version']} "
                "was trained; retrain it"
            )
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        raw_profile = manifest.get("profile")
        profile = None if raw_profile is None else ProfileSpec.from_dict(raw_profile)
        raw_enrichment = manifest.get("enrichment")
        enrichment = None if raw_enrichment is None else EnrichmentSpec.from_dict(raw_enrichment)
        if enrichment is not None and enrichment.features != ENRICHMENT_FEATURES:
            raise ArtifactIntegrityError(
                f"model {manifest['version']} reads enrichment features "
                f"{list(enrichment.features)}, this code computes {list(ENRICHMENT_FEATURES)}"
            )
        net = NbaNet(
            torch.zeros(len(ids), EMBEDDING_DIM),
            NbaHyperParams.from_dict(manifest["hyperparameters"]),
            profile,
            enrichment,
        )
        net.load_state_dict(state)
        net.eval()
        net.requires_grad_(False)
        # One copy per scoring precision (the network is ~0.2 M parameters).
        self._nets: dict[str, NbaNet] = {
            precision: copy.deepcopy(net).to(dtype) for precision, dtype in SCORING_DTYPES.items()
        }
        self._net = self._nets["float64"]
        self.manifest: Mapping[str, Any] = manifest
        self.version: str = str(manifest["version"])
        self.sha256: str = actual
        self.encoder_name: str = str(manifest.get("encoder", ""))
        self.catalog: tuple[Action, ...] = tuple(catalog)
        self.action_ids: tuple[str, ...] = tuple(ids)
        self.profile_spec: ProfileSpec | None = profile
        self.enrichment_spec: EnrichmentSpec | None = enrichment

    @property
    def net(self) -> NbaNet:
        """The loaded network (float64, eval mode, no gradients); do not modify it."""
        return self._net

    def prepare(
        self,
        memories: MemoryFeatures,
        context: NDArray[Any] | None,
        profile: ProfileFeatures | None = None,
        *,
        precision: ScoringPrecision = "float64",
    ) -> PreparedDecision:
        """Encode one decision's memories and context (``None`` = no current message), to be
        scored in ``precision`` (float64 by default, the arithmetic of ``logits`` and
        ``forward_batch``; serving passes its configured one).

        ``profile`` is required by a model with profile features and refused by one without.
        """
        net = self._nets.get(precision)
        if net is None:
            raise ValueError(f"unknown scoring precision {precision!r}")
        return PreparedDecision(net, memories, context, profile)

    def logits(
        self,
        memories: MemoryFeatures,
        context: NDArray[Any] | None,
        profile: ProfileFeatures | None = None,
    ) -> NDArray[np.float64]:
        """Log-odds of success (n_actions,) in catalog order, every memory present."""
        return self.prepare(memories, context, profile).full_logits()

    def score_coalitions(
        self,
        memories: MemoryFeatures,
        context: NDArray[Any] | None,
        coalitions: NDArray[np.bool_],
        profile: ProfileFeatures | None = None,
    ) -> NDArray[np.float64]:
        """Log-odds (n, n_actions) for coalitions (n, n_memories + 1); last column = context."""
        return self.prepare(memories, context, profile).logits(coalitions)

    def forward_batch(
        self,
        embeddings: NDArray[np.float32],
        ages_days: NDArray[np.float64],
        channels: NDArray[np.int64],
        directions: NDArray[np.int64],
        mask: NDArray[np.bool_],
        context: NDArray[np.float32],
        context_mask: NDArray[np.bool_],
        profile_numeric: NDArray[np.float64] | None = None,
        profile_categorical: NDArray[np.int64] | None = None,
        enrichment: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float64]:
        """The network's batched forward: (B, M, ...) inputs and masks -> log-odds (B, A).

        A model with profile features also takes profile_numeric (B, n_numeric) and
        profile_categorical (B, n_categorical); ``enrichment`` (B, M, n_enrichment) is the
        memories' enrichment features (None: not known; ignored by a model without them).
        """
        numeric = None
        categorical = None
        if profile_numeric is not None:
            numeric = torch.from_numpy(np.asarray(profile_numeric, dtype=np.float64))
        if profile_categorical is not None:
            categorical = torch.from_numpy(np.asarray(profile_categorical, dtype=np.int64))
        with torch.inference_mode():
            out = self._net(
                torch.from_numpy(np.asarray(embeddings)).to(torch.float64),
                torch.from_numpy(np.asarray(ages_days)).to(torch.float64),
                torch.from_numpy(np.asarray(channels, dtype=np.int64)),
                torch.from_numpy(np.asarray(directions, dtype=np.int64)),
                torch.from_numpy(np.asarray(mask, dtype=bool)),
                torch.from_numpy(np.asarray(context)).to(torch.float64),
                torch.from_numpy(np.asarray(context_mask, dtype=bool)),
                numeric,
                categorical,
                None
                if enrichment is None
                else torch.from_numpy(np.asarray(enrichment)).to(torch.float64),
            )
        result: NDArray[np.float64] = out.numpy().astype(np.float64, copy=False)
        return result


def sigmoid(logit: float) -> float:
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


def write_artifact(
    net: NbaNet, out_dir: Path, manifest: dict[str, Any], *, name: str = ARTIFACT_NAME
) -> dict[str, Any]:
    """Save ``<name>.pt`` and ``<name>.json``; fills in ``sha256``, ``size_bytes`` and version.

    ``manifest["version"]`` may hold ``{sha}`` which becomes the first 8 hex of the sha256;
    ``hyperparameters`` are always the network's own.
    A network with profile features gets its spec under ``profile``, one with enrichment
    features its spec under ``enrichment`` (``NbaScorer`` needs them).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / f"{name}.pt"
    state = {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}
    torch.save(state, weights_path)
    digest = file_sha256(weights_path)
    manifest = dict(manifest)
    manifest["hyperparameters"] = net.hp.to_dict()  # what NbaScorer rebuilds the network with
    if net.profile_spec is not None:
        manifest["profile"] = net.profile_spec.to_dict()
    if net.enrichment_spec is not None:
        manifest["enrichment"] = net.enrichment_spec.to_dict()
    manifest["format"] = MANIFEST_FORMAT
    manifest["artifact"] = weights_path.name
    manifest["sha256"] = digest
    manifest["size_bytes"] = weights_path.stat().st_size
    manifest["version"] = str(manifest.get("version", name)).format(sha=digest[:8])
    manifest_path = out_dir / f"{name}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", "utf-8")
    return manifest
