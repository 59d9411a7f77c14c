"""Fine-tune a next-best-action model on a tenant's recorded outcomes.

Start: the weights of the model version the tenant is served (its prior knowledge, e.g. the
shipped model trained on simulated journeys). Data: ``memcrm.decisions.feedback`` examples, one
per (decision, action) with an outcome, each with the memories the decision knew. Loss: binary
cross-entropy on the outcome's action's log-odds, plus an L2 pull towards the starting weights
(``anchor``): with few outcomes the model moves only as far as they justify, and an action
without outcomes keeps its prior behaviour.

Evaluation: a fifth of the decisions (by sha256 of the recommendation id, so a decision's
actions stay together) is held out; the manifest records log loss, and ROC-AUC when both
outcomes occur, of the starting and the fine-tuned model on it. With fewer than
``MIN_HELD_OUT`` held-out examples nothing is held out and the metrics say so.

Reproducible: seeded shuffling, deterministic torch algorithms, one thread; the same examples,
seed and starting model give a byte-identical artifact.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from numpy.typing import NDArray

from memcrm.core.errors import MemcrmError
from memcrm.core.settings import Settings
from memcrm.core.types import EMBEDDING_DIM
from memcrm.decisions.feedback import OutcomeExample, outcome_examples
from memcrm.memory.activations import Activations
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.migrate import migrate
from memcrm.memory.recall import MemoryReader
from memcrm.memory.store import MemoryStore
from memcrm.models.encoder import Encoder
from memcrm.models.nba import NbaScorer, write_artifact
from memcrm.models.nba_net import N_ENRICHMENT_FEATURES, NbaNet
from memcrm.models.query_encoder import QueryEncoder
from memcrm.models.registry import ModelRegistry

MIN_HELD_OUT = 10


@dataclass(frozen=True)
class FineTune:
    epochs: int = 30
    learning_rate: float = 1e-3
    anchor: float = 1e-2  # weight of the L2 pull towards the starting weights
    batch_size: int = 32
    seed: int = 0


def held_out(recommendation_id: str) -> bool:
    return hashlib.sha256(f"nba-outcomes:{recommendation_id}".encode()).digest()[0] % 5 == 0


def _batch(
    examples: Sequence[OutcomeExample], columns: dict[str, int]
) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor, torch.Tensor]:
    """Padded model inputs, the action column of each example and its label."""
    n = len(examples)
    m = max(1, max(len(e.memories) for e in examples))
    embeddings = torch.zeros((n, m, EMBEDDING_DIM))
    ages = torch.zeros((n, m))
    channels = torch.zeros((n, m), dtype=torch.long)
    directions = torch.zeros((n, m), dtype=torch.long)
    mask = torch.zeros((n, m), dtype=torch.bool)
    context = torch.zeros((n, EMBEDDING_DIM))
    context_mask = torch.zeros(n, dtype=torch.bool)
    enrichment = torch.zeros((n, m, N_ENRICHMENT_FEATURES))
    for i, e in enumerate(examples):
        k = len(e.memories)
        embeddings[i, :k] = torch.from_numpy(e.memories.embeddings)
        enrichment[i, :k] = torch.from_numpy(e.memories.enrichment)
        ages[i, :k] = torch.from_numpy(e.memories.ages_days.astype(np.float32))
        channels[i, :k] = torch.from_numpy(e.memories.channels)
        directions[i, :k] = torch.from_numpy(e.memories.directions)
        mask[i, :k] = True
        if e.context is not None:
            context[i] = torch.from_numpy(np.asarray(e.context, dtype=np.float32))
            context_mask[i] = True
    action = torch.tensor([columns[e.action_id] for e in examples])
    label = torch.tensor([1.0 if e.success else 0.0 for e in examples])
    # Profile features: none; each memory's enrichment as served (a model without enrichment
    # features ignores it).
    inputs = (embeddings, ages, channels, directions, mask, context, context_mask, None, None)
    return (*inputs, enrichment), action, label


def _scores(
    net: NbaNet, examples: Sequence[OutcomeExample], columns: dict[str, int]
) -> NDArray[np.float64]:
    if not examples:
        return np.zeros(0)
    net.eval()
    with torch.inference_mode():
        inputs, action, _ = _batch(examples, columns)
        logits = net(*inputs)
        chosen: NDArray[np.float64] = (
            logits.gather(1, action.unsqueeze(1)).squeeze(1).double().numpy()
        )
        return chosen


def _metrics(scores: NDArray[np.float64], examples: Sequence[OutcomeExample]) -> dict[str, Any]:
    labels = np.array([1.0 if e.success else 0.0 for e in examples])
    p = 1.0 / (1.0 + np.exp(-scores))
    eps = 1e-12
    log_loss = float(-np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps)))
    out: dict[str, Any] = {"examples": len(examples), "log_loss": log_loss}
    if 0 < labels.sum() < len(labels):
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = float(roc_auc_score(labels, scores))
    return out


def fine_tune(
    base: NbaScorer, examples: Sequence[OutcomeExample], cfg: FineTune | None = None
) -> tuple[NbaNet, dict[str, Any]]:
    """The fine-tuned network (float32, eval mode) and its metrics."""
    cfg = cfg or FineTune()
    if not examples:
        raise ValueError("no recorded outcomes to train on")
    columns = {a: i for i, a in enumerate(base.action_ids)}
    unknown = sorted({e.action_id for e in examples} - set(columns))
    if unknown:
        raise ValueError(f"model {base.version} cannot score actions {unknown}")
    torch.manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        test = [e for e in examples if held_out(e.recommendation_id)]
        if len(test) < MIN_HELD_OUT:
            test = []
        train = [e for e in examples if e not in test] if test else list(examples)
        net = copy.deepcopy(base.net).float()
        net.requires_grad_(True)
        start = [p.detach().clone() for p in net.parameters()]
        before = _metrics(_scores(net, test, columns), test) if test else None
        optimiser = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        generator = torch.Generator().manual_seed(cfg.seed)
        history = []
        for epoch in range(cfg.epochs):
            net.train()
            order = torch.randperm(len(train), generator=generator).tolist()
            total = 0.0
            for lo in range(0, len(order), cfg.batch_size):
                chunk = [train[i] for i in order[lo : lo + cfg.batch_size]]
                inputs, action, label = _batch(chunk, columns)
                logit = net(*inputs).gather(1, action.unsqueeze(1)).squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logit, label)
                pull = torch.stack(
                    [((p - p0) ** 2).sum() for p, p0 in zip(net.parameters(), start, strict=True)]
                ).sum()
                objective: torch.Tensor = loss + cfg.anchor * pull
                optimiser.zero_grad()
                objective.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += float(loss.detach()) * len(chunk)
            history.append({"epoch": epoch + 1, "train_log_loss": total / len(train)})
        net.eval()
        net.requires_grad_(False)
        metrics: dict[str, Any] = {
            "train_examples": len(train),
            "history": history,
            "held_out": (
                {"base": before, "fine_tuned": _metrics(_scores(net, test, columns), test)}
                if test
                else f"none: fewer than {MIN_HELD_OUT} held-out examples"
            ),
        }
        return net, metrics
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def write_fine_tuned(
    base: NbaScorer,
    net: NbaNet,
    metrics: dict[str, Any],
    examples: Sequence[OutcomeExample],
    tenant_id: str,
    out_dir: Path,
    cfg: FineTune | None = None,
) -> dict[str, Any]:
    """Write the artifact (``nba.pt`` + ``nba.json``) with its lineage and metrics."""
    cfg = cfg or FineTune()
    manifest = {
        k: v
        for k, v in base.manifest.items()
        if k not in ("sha256", "size_bytes", "artifact", "format", "metrics", "training")
    }
    decided = sorted(e.decided_at for e in examples)
    manifest.update(
        {
            "version": f"nba-{_slug(tenant_id)}-outcomes-{{sha}}",
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "fine_tuned_from": {"version": base.version, "sha256": base.sha256},
            "seed": cfg.seed,
            "training": {
                "method": "fine-tuning on recorded outcomes (memcrm.models.train_outcomes)",
                "epochs": cfg.epochs,
                "learning_rate": cfg.learning_rate,
                "anchor_l2_to_base": cfg.anchor,
                "batch_size": cfg.batch_size,
            },
            "training_data": {
                "description": "outcomes recorded with RecordOutcome, joined to the memories "
                "each decision recalled as of its as_of (memcrm.decisions.feedback)",
                "tenant": tenant_id,
                "decisions": len({e.recommendation_id for e in examples}),
                "outcomes": len(examples),
                "successes": sum(e.success for e in examples),
                "decided_from": decided[0].isoformat(),
                "decided_until": decided[-1].isoformat(),
                "decided_by": sorted({e.model_version for e in examples}),
            },
            "metrics": metrics,
        }
    )
    return write_artifact(net, out_dir, manifest)


def _slug(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned[:40] or "tenant"


def train_from_outcomes(
    store: MemoryStore,
    registry: ModelRegistry,
    tenant_id: str,
    out_dir: Path,
    *,
    cfg: FineTune | None = None,
    memories: int = 32,
    register: bool = True,
) -> dict[str, Any]:
    """Fine-tune the tenant's active model on its recorded outcomes, write the artifact to
    ``out_dir`` and (``register``) add it to the registry; returns the manifest."""
    active = Activations(store).active(tenant_id)
    base = registry.scorer(active.version if active else registry.default.version)
    encoder = QueryEncoder(Encoder(threads=1))
    examples = outcome_examples(
        store, MemoryReader(store, encoder), encoder, tenant_id, memories=memories
    )
    net, metrics = fine_tune(base, examples, cfg)
    manifest = write_fine_tuned(base, net, metrics, examples, tenant_id, out_dir, cfg)
    if register:
        registry.register(out_dir)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m memcrm.models.train_outcomes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--out", type=Path, help="artifact folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=FineTune.seed)
    parser.add_argument("--epochs", type=int, default=FineTune.epochs)
    parser.add_argument("--no-register", action="store_true", help="write the artifact only")
    args = parser.parse_args(argv)
    settings = Settings()
    cfg = FineTune(epochs=args.epochs, seed=args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="nba-outcomes-"))
    registry = ModelRegistry(settings.model_registry_dir, settings.nba_model_dir)
    register = not args.no_register
    if register and settings.model_registry_dir is None:
        parser.error("set MEMCRM_MODEL_REGISTRY_DIR to register the model (or --no-register)")
    with EmbeddedStores(settings.home, settings.database_url, settings.redis_url) as stores:
        migrate(stores.database_url)
        store = MemoryStore(stores.database_url)
        try:
            manifest = train_from_outcomes(
                store, registry, args.tenant, out, cfg=cfg, register=register
            )
        except (ValueError, MemcrmError) as exc:
            message = exc.message if isinstance(exc, MemcrmError) else str(exc)
            parser.exit(1, f"train-nba: {message}\n")
        finally:
            store.close()
    print(
        json.dumps(
            {
                "version": manifest["version"],
                "sha256": manifest["sha256"],
                "artifact": str(out),
                "registered": register,
                "fine_tuned_from": manifest["fine_tuned_from"],
                "training_data": manifest["training_data"],
                "held_out": manifest["metrics"]["held_out"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
