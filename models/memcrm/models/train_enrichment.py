"""Rebuild the shipped enrichment artifacts from the public data, reproducibly.

    python -m memcrm.models.train_enrichment [all] [--data-dir DIR] [--out DIR] [--seed N]
    python -m memcrm.models.train_enrichment intents --csv FILE --name NAME [--out DIR]

``all`` runs the frozen MiniLM trunk once over the training texts, keeps the hidden states
entering the top layer(s), and fine-tunes a copy of those top layer(s) (the branch) with three
heads at once: Banking77 intents, airline sentiment and airline issue type. Airline losses are
weighted by annotator agreement; the weights evaluated and shipped are an exponential moving
average of the trained ones. Model selection (the epoch kept) uses validation splits carved
from the training data only; the Banking77 test split and the airline held-out 20 % are never
seen here (see ``enrichment_data``).

``intents`` trains only a tenant's intent head on the shipped, frozen branch, from a CSV with
columns ``text`` and ``category``, and writes ``intents-NAME``.

Same seed, same machine, same thread count -> byte-identical weights files (deterministic
algorithms, fixed thread count, fixed data order, no timestamps in the weights).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from numpy.typing import NDArray
from sklearn.metrics import f1_score

from memcrm.models.encoder import ENCODER_NAME, Encoder
from memcrm.models.enrichment import (
    BRANCH_FILE,
    EnrichmentModel,
    default_artifact_dir,
    tokenize,
)
from memcrm.models.enrichment_data import (
    SPLIT_RULE,
    Airline,
    TextSet,
    default_data_dir,
    file_sha256,
    labelled_only,
    load_airline,
    load_banking77,
    load_labelled_csv,
)
from memcrm.models.enrichment_net import Branch, BranchLayer, Head

THREADS = 2
PAD_TO = 8  # fewer distinct tensor shapes -> fewer slow first-time kernel set-ups


@dataclass(frozen=True)
class Hyper:
    branch_layers: int = 1
    epochs: int = 8
    batch_size: int = 32
    branch_lr: float = 2e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    head_dropout: float = 0.1
    # Exponential moving average of the weights, evaluated and shipped instead of the last
    # step's: a cheap, well-known guard against the noise of small-batch updates.
    ema_decay: float = 0.999
    # Weight each airline example's loss by its annotators' agreement (the data set's
    # ``*_confidence`` columns): crowd labels with 0.35 agreement should pull less than 1.0.
    confidence_weighted: bool = True

    @property
    def trunk_layer(self) -> int:
        """Index into ``hidden_states`` (0 = embeddings) that feeds the branch."""
        return 6 - self.branch_layers


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    # Denormal floats in backward passes slow CPU kernels several-fold.
    torch.set_flush_denormal(True)


@dataclass
class Tokens:
    """Ragged per-token trunk states: rows ``offsets[i]:offsets[i+1]`` belong to text i."""

    states: NDArray[np.float32]
    offsets: NDArray[np.int64]

    @property
    def lengths(self) -> NDArray[np.int64]:
        return np.diff(self.offsets)

    def pad(self, rows: NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths[rows]
        width = int(-(-int(lengths.max()) // PAD_TO) * PAD_TO)
        x = np.zeros((len(rows), width, self.states.shape[1]), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for j, r in enumerate(rows):
            x[j, : lengths[j]] = self.states[self.offsets[r] : self.offsets[r + 1]]
            mask[j, : lengths[j]] = 1.0
        return torch.from_numpy(x), torch.from_numpy(mask)


def trunk_states(encoder: Encoder, texts: Sequence[str], layer: int) -> Tokens:
    """Run the frozen base model once and keep ``hidden_states[layer]`` per real token."""
    st: Any = encoder.model
    bert = st[0].auto_model.eval()
    tokenized = st.tokenizer(
        list(texts), truncation=True, max_length=st.max_seq_length, add_special_tokens=True
    )["input_ids"]
    lengths = np.array([len(ids) for ids in tokenized], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    states = np.zeros((int(offsets[-1]), 384), dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            rows = order[start : start + 64]
            batch = tokenize(st, [texts[i] for i in rows])
            hidden = bert(**batch, output_hidden_states=True).hidden_states[layer].numpy()
            for j, r in enumerate(rows):
                states[offsets[r] : offsets[r + 1]] = hidden[j, : lengths[r]]
    return Tokens(states, offsets)


def bucketed_batches(
    rows: NDArray[np.int64], lengths: NDArray[np.int64], size: int, rng: np.random.Generator | None
) -> list[NDArray[np.int64]]:
    """Shuffle (if ``rng``), then sort windows of 50 batches by length: little padding."""
    if rng is not None:
        rows = rows[rng.permutation(len(rows))]
    batches: list[NDArray[np.int64]] = []
    window = size * 50
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[j : j + size] for j in range(0, len(chunk), size))
    return batches


@dataclass
class Task:
    """One head's training rows (indices into ``Tokens``) and labels."""

    name: str
    rows: NDArray[np.int64]
    y: NDArray[np.int64]  # aligned with Tokens rows; -1 = no label for this head


def pooled(
    branch: Branch, tokens: Tokens, rows: NDArray[np.int64], batch: int = 128
) -> torch.Tensor:
    """Branch vectors for ``rows`` in the given order (eval mode)."""
    branch.eval()
    out = torch.zeros((len(rows), 384))
    order = np.argsort(tokens.lengths[rows], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            pick = order[start : start + batch]
            x, mask = tokens.pad(rows[pick])
            out[torch.from_numpy(pick)] = branch(x, mask)
    return out


def metrics(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> dict[str, float]:
    return {
        "accuracy": round(float((y_true == y_pred).mean()), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro")), 4),
        "n": len(y_true),
    }


def weighted_cross_entropy(
    logits: torch.Tensor, y: NDArray[np.int64], weights: NDArray[np.float32]
) -> torch.Tensor:
    """Mean cross-entropy with per-example weights (normalised by their sum)."""
    w = torch.from_numpy(weights)
    losses = F.cross_entropy(logits, torch.from_numpy(y), reduction="none")
    return (losses * w).sum() / w.sum()


def to_fp16_and_back(module: torch.nn.Module) -> None:
    """Weights ship as fp16 (half the bytes); evaluate exactly what ships."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


def save_artifact(
    folder: Path, name: str, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write ``name.safetensors`` (fp16) and ``name.json`` carrying its sha256 and size."""
    from safetensors.torch import save as save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    data = save_safetensors({k: v.detach().half().contiguous() for k, v in tensors.items()})
    (folder / f"{name}.safetensors").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    full = {"name": name, "sha256": digest, "size_bytes": len(data), **manifest}
    if "version" not in full:
        full["version"] = f"{name}-{digest[:8]}"
    elif "{sha8}" in full["version"]:
        full["version"] = full["version"].replace("{sha8}", digest[:8])
    (folder / f"{name}.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full


SELECTION_RULE = (
    "epoch maximising the smallest validation margin over the targets (intent accuracy >= 0.92, "
    "sentiment accuracy >= 0.82, every task's accuracy and macro-F1 >= its validation "
    "TF-IDF+LR baseline + 0.02), ties broken by the summed validation accuracy"
)
VALIDATION_TARGETS = {"banking77_intent": 0.92, "airline_sentiment": 0.82}
MARGIN = 0.02


def validation_baselines(
    bank_train: TextSet, bank_val: TextSet, air: Airline
) -> dict[str, dict[str, float]]:
    """TF-IDF + LR fitted on the training split and scored on validation (never on test)."""
    from memcrm.models.eval_enrichment import baseline

    return {
        "banking77_intent": baseline(bank_train, bank_val),
        "airline_sentiment": baseline(air.train_sentiment, air.val_sentiment),
        "airline_issue": baseline(labelled_only(air.train_issue), labelled_only(air.val_issue)),
    }


def selection_score(
    val: dict[str, dict[str, float]], baselines: dict[str, dict[str, float]]
) -> tuple[float, float]:
    """(smallest margin to any target, summed accuracy): a balanced epoch beats one that is
    far above some targets and below another."""
    margins = []
    for task, result in val.items():
        base = baselines[task]
        margins.append(result["macro_f1"] - base["macro_f1"] - MARGIN)
        floor = max(base["accuracy"] + MARGIN, VALIDATION_TARGETS.get(task, 0.0))
        margins.append(result["accuracy"] - floor)
    return round(min(margins), 6), round(sum(v["accuracy"] for v in val.values()), 6)


def build_date() -> str:
    """``SOURCE_DATE_EPOCH`` if set (reproducible builds), else today (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.strftime("%Y%m%d")


def train_all(data_dir: Path, out: Path, seed: int, hyper: Hyper) -> dict[str, Any]:
    started = time.monotonic()
    set_determinism(seed)
    bank = load_banking77(data_dir)
    air = load_airline(data_dir)
    encoder = Encoder()
    # One token store: banking train | banking val | airline train | airline val.
    parts = [bank.train.texts, bank.val.texts, air.train_sentiment.texts, air.val_sentiment.texts]
    starts = np.cumsum([0] + [len(p) for p in parts])
    texts = [t for part in parts for t in part]
    tokens = trunk_states(encoder, texts, hyper.trunk_layer)
    log(f"trunk states for {len(texts)} texts: {time.monotonic() - started:.0f}s")

    def span(i: int) -> NDArray[np.int64]:
        return np.arange(starts[i], starts[i + 1], dtype=np.int64)

    n = len(texts)
    y_intent = np.full(n, -1, dtype=np.int64)
    y_sent = np.full(n, -1, dtype=np.int64)
    y_issue = np.full(n, -1, dtype=np.int64)
    y_intent[span(0)], y_intent[span(1)] = bank.train.y, bank.val.y
    y_sent[span(2)], y_sent[span(3)] = air.train_sentiment.y, air.val_sentiment.y
    y_issue[span(2)], y_issue[span(3)] = air.train_issue.y, air.val_issue.y
    w_sent = np.ones(n, dtype=np.float32)
    w_issue = np.ones(n, dtype=np.float32)
    if hyper.confidence_weighted:
        assert air.train_sentiment.confidence is not None
        assert air.train_issue.confidence is not None
        w_sent[span(2)] = air.train_sentiment.confidence
        w_issue[span(2)] = air.train_issue.confidence

    base: Any = encoder.model[0].auto_model
    state = base.state_dict()
    branch = Branch(hyper.branch_layers)
    for k, layer in enumerate(branch.layers):
        cast(BranchLayer, layer).load_from_bert(state, f"encoder.layer.{hyper.trunk_layer + k}.")
    heads = {
        "intent": Head(len(bank.train.labels), hyper.head_dropout),
        "sentiment": Head(len(air.train_sentiment.labels), hyper.head_dropout),
        "issue": Head(len(air.train_issue.labels), hyper.head_dropout),
    }
    head_params = [p for h in heads.values() for p in h.parameters()]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(branch.parameters()), "lr": hyper.branch_lr},
            {"params": head_params, "lr": hyper.head_lr},
        ],
        weight_decay=hyper.weight_decay,
    )
    trained: list[torch.nn.Module] = [branch, *heads.values()]
    averaged = [copy.deepcopy(m) for m in trained]  # what is evaluated and shipped
    for m in averaged:
        m.requires_grad_(False)
    steps = 0

    def update_average() -> None:
        # Bias-corrected start (as in TensorFlow's ExponentialMovingAverage num_updates).
        decay = min(hyper.ema_decay, (1 + steps) / (10 + steps))
        with torch.no_grad():
            for avg, live in zip(averaged, trained, strict=True):
                for a, p in zip(avg.parameters(), live.parameters(), strict=True):
                    a.mul_(decay).add_(p, alpha=1 - decay)

    rng = np.random.default_rng(seed)
    lengths = tokens.lengths
    n_batches = len(bucketed_batches(span(0), lengths, hyper.batch_size, None)) + len(
        bucketed_batches(span(2), lengths, hyper.batch_size, None)
    )
    total = hyper.epochs * n_batches
    warmup = max(1, int(hyper.warmup_fraction * total))

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / total)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def validate() -> dict[str, dict[str, float]]:
        """The averaged weights on the validation splits."""
        avg_branch = cast(Branch, averaged[0])
        intent, sentiment, issue = (cast(Head, m) for m in averaged[1:])
        for m in averaged:
            m.eval()
        with torch.inference_mode():
            zb = pooled(avg_branch, tokens, span(1))
            za = pooled(avg_branch, tokens, span(3))
            has_issue = y_issue[span(3)] >= 0
            return {
                "banking77_intent": metrics(y_intent[span(1)], intent(zb).argmax(1).numpy()),
                "airline_sentiment": metrics(y_sent[span(3)], sentiment(za).argmax(1).numpy()),
                "airline_issue": metrics(
                    y_issue[span(3)][has_issue],
                    issue(za[torch.from_numpy(has_issue)]).argmax(1).numpy(),
                ),
            }

    val_baselines = validation_baselines(bank.train, bank.val, air)
    log(f"validation TF-IDF+LR baselines: {json.dumps(val_baselines)}")
    best: tuple[tuple[float, float], int, dict[str, Any], dict[str, dict[str, float]]] | None = None
    history: list[dict[str, Any]] = []
    branch.train()
    for epoch in range(hyper.epochs):
        jobs = [("bank", b) for b in bucketed_batches(span(0), lengths, hyper.batch_size, rng)]
        jobs += [("air", b) for b in bucketed_batches(span(2), lengths, hyper.batch_size, rng)]
        for k in rng.permutation(len(jobs)):
            kind, rows = jobs[k]
            x, mask = tokens.pad(rows)
            z = branch(x, mask)
            if kind == "bank":
                loss = F.cross_entropy(heads["intent"](z), torch.from_numpy(y_intent[rows]))
            else:
                loss = weighted_cross_entropy(heads["sentiment"](z), y_sent[rows], w_sent[rows])
                has = y_issue[rows] >= 0
                if has.any():
                    logits = heads["issue"](z[torch.from_numpy(has)])
                    loss = loss + weighted_cross_entropy(
                        logits, y_issue[rows][has], w_issue[rows][has]
                    )
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            steps += 1
            update_average()
        val = validate()
        score = selection_score(val, val_baselines)
        history.append({"epoch": epoch + 1, **val})
        log(f"epoch {epoch + 1}: {json.dumps(val)} ({time.monotonic() - started:.0f}s)")
        if best is None or score > best[0]:
            snapshot = {
                "branch": copy.deepcopy(averaged[0].state_dict()),
                **{
                    name: copy.deepcopy(m.state_dict())
                    for name, m in zip(heads, averaged[1:], strict=True)
                },
            }
            best = (score, epoch + 1, snapshot, val)
    assert best is not None
    _, best_epoch, snapshot, _ = best
    averaged[0].load_state_dict(snapshot["branch"])
    for head_name, m in zip(heads, averaged[1:], strict=True):
        m.load_state_dict(snapshot[head_name])
    for m in averaged:
        to_fp16_and_back(m)
    shipped_val = validate()
    branch = cast(Branch, averaged[0])
    heads = {name: cast(Head, m) for name, m in zip(heads, averaged[1:], strict=True)}
    log(f"kept epoch {best_epoch}; fp16 validation {json.dumps(shipped_val)}")

    data_files = {**bank.files, **air.files}
    common = {
        "base_encoder": ENCODER_NAME,
        "data_files": {k: file_sha256(p) for k, p in sorted(data_files.items())},
        "split_rule": SPLIT_RULE,
        "seed": seed,
        "torch": torch.__version__.split("+")[0],
        "threads": THREADS,
    }
    hyperparameters = {
        **hyper.__dict__,
        "trunk_layer": hyper.trunk_layer,
        "best_epoch": best_epoch,
        "selection": SELECTION_RULE,
        "validation_baselines": val_baselines,
    }
    tensors = {f"branch.{k}": v for k, v in branch.state_dict().items()}
    for name in ("sentiment", "issue"):
        tensors.update({f"{name}.{k}": v for k, v in heads[name].state_dict().items()})
    branch_manifest = save_artifact(
        out,
        BRANCH_FILE,
        tensors,
        {
            **common,
            "version": f"enrich-{build_date()}-{{sha8}}",
            "hyperparameters": hyperparameters,
            "labels": {
                "sentiment": list(air.train_sentiment.labels),
                "issue": list(air.train_issue.labels),
            },
            "metrics": {
                "validation": {k: shipped_val[k] for k in ("airline_sentiment", "airline_issue")},
                "history": history,
            },
        },
    )
    intents_manifest = save_artifact(
        out,
        "intents-banking77",
        {f"head.{k}": v for k, v in heads["intent"].state_dict().items()},
        {
            **common,
            "branch_sha256": branch_manifest["sha256"],
            "labels": list(bank.train.labels),
            "hyperparameters": hyperparameters,
            "metrics": {"validation": shipped_val["banking77_intent"]},
        },
    )
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Shipped enrichment artifacts (memcrm.models.train_enrichment)."""\n')
    log(f"wrote {out} in {time.monotonic() - started:.0f}s")
    return {"enrich": branch_manifest, "intents-banking77": intents_manifest}


def train_intents(
    csv: Path,
    name: str,
    out: Path,
    artifact_dir: Path,
    seed: int,
    *,
    steps: int = 300,
    model: EnrichmentModel | None = None,
) -> dict[str, Any]:
    """A tenant intent head on the frozen shipped branch (linear, full-batch AdamW)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"intent set name {name!r}: use letters, digits, '-' and '_'")
    set_determinism(seed)
    data = load_labelled_csv(csv)
    if len(data.labels) < 2:
        raise ValueError(f"{csv} needs at least two categories")
    if model is None or model.artifact_dir != artifact_dir:
        model = EnrichmentModel(artifact_dir)
    _, z = model.features(list(data.texts))
    y = torch.from_numpy(data.y)
    # Hold out a validation tenth for the manifest when there is enough data to say anything.
    keys = [hashlib.sha256(f"enrich-val:{t}".encode()).digest()[0] % 10 for t in data.texts]
    val = np.array(keys) == 0
    if len(data.texts) < 100 or val.all():
        val = np.zeros(len(data.texts), dtype=bool)
    train = torch.from_numpy(~val)
    head = Head(len(data.labels), dropout=0.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(head(z[train]), y[train])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    to_fp16_and_back(head)
    head.eval()
    with torch.inference_mode():
        predicted = head(z).argmax(1).numpy()
    result: dict[str, Any] = {"train": metrics(data.y[~val], predicted[~val])}
    if val.any():
        result["validation"] = metrics(data.y[val], predicted[val])
    return save_artifact(
        out,
        f"intents-{name}",
        {f"head.{k}": v for k, v in head.state_dict().items()},
        {
            "base_encoder": ENCODER_NAME,
            "branch_sha256": model.branch_sha256,
            "branch_version": model.branch_version,
            "labels": list(data.labels),
            "data_files": {csv.name: file_sha256(csv)},
            "split_rule": {"validation": "rows with sha256('enrich-val:<text>')[0] mod 10 == 0"},
            "seed": seed,
            "hyperparameters": {"steps": steps, "lr": 1e-2, "weight_decay": 1e-2},
            "metrics": result,
        },
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memcrm.models.train_enrichment")
    parser.add_argument("command", nargs="?", default="all", choices=["all", "intents"])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="intents: CSV with columns text, category")
    parser.add_argument("--name", help="intents: the intent set's name")
    parser.add_argument(
        "--artifact-dir", type=Path, default=None, help="intents: branch to train on"
    )
    parser.add_argument("--epochs", type=int, default=Hyper.epochs)
    parser.add_argument("--branch-layers", type=int, default=Hyper.branch_layers)
    parser.add_argument("--branch-lr", type=float, default=Hyper.branch_lr)
    args = parser.parse_args(argv)
    out = args.out or default_artifact_dir()
    if args.command == "intents":
        if args.csv is None or args.name is None:
            parser.error("intents needs --csv and --name")
        manifest = train_intents(
            args.csv, args.name, out, args.artifact_dir or default_artifact_dir(), args.seed
        )
        print(json.dumps({"intents": manifest["version"], "metrics": manifest["metrics"]}))
        return
    hyper = Hyper(epochs=args.epochs, branch_layers=args.branch_layers, branch_lr=args.branch_lr)
    manifests = train_all(args.data_dir or default_data_dir(), out, args.seed, hyper)
    print(json.dumps({k: v["version"] for k, v in manifests.items()}))


if __name__ == "__main__":
    main()
