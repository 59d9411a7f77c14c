"""The enrichment branch: a fine-tuned copy of MiniLM's top layer(s) plus task heads.

Why a branch and not a probe: the frozen, mean-pooled MiniLM vector is tuned for semantic
similarity, and a linear probe on it tops out near 0.80 on Banking77. Fine-tuning the whole
encoder would change the recall embedding (stored memories and queries must stay comparable)
or need a second 90 MB copy. So the shared trunk runs once, the untouched base top layers keep
producing the recall embedding, and a small copy of the top layer(s), fed from the trunk's
hidden states below them, is fine-tuned for all the heads at once.

The layer is re-implemented here (post-LayerNorm BERT layer, exact GELU) rather than taken from
``transformers`` so the artifact does not depend on that library's internal layer API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

HIDDEN = 384
HEADS = 12
FFN = 1536
LN_EPS = 1e-12


class BranchLayer(nn.Module):
    """One BERT encoder layer with MiniLM-L6's shape; initialised from a base layer."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.attn_out = nn.Linear(HIDDEN, HIDDEN)
        self.attn_norm = nn.LayerNorm(HIDDEN, eps=LN_EPS)
        self.ffn_in = nn.Linear(HIDDEN, FFN)
        self.ffn_out = nn.Linear(FFN, HIDDEN)
        self.ffn_norm = nn.LayerNorm(HIDDEN, eps=LN_EPS)
        self.dropout = nn.Dropout(0.1)

    def load_from_bert(self, state: Mapping[str, torch.Tensor], prefix: str) -> None:
        """Copy the weights of ``transformers``' BertLayer whose keys start with ``prefix``."""
        names = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        own: dict[str, torch.Tensor] = {}
        for mine, theirs in names.items():
            for param in ("weight", "bias"):
                own[f"{mine}.{param}"] = state[f"{prefix}{theirs}.{param}"].detach().clone()
        self.load_state_dict(own)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, T, 384); ``bias`` (B, 1, 1, T) additive attention mask."""
        batch, length, _ = hidden.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, HEADS, HIDDEN // HEADS).transpose(1, 2)

        q, k, v = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attended = attended.transpose(1, 2).reshape(batch, length, HIDDEN)
        hidden = self.attn_norm(hidden + self.dropout(self.attn_out(attended)))
        inner = F.gelu(self.ffn_in(hidden))
        out: torch.Tensor = self.ffn_norm(hidden + self.dropout(self.ffn_out(inner)))
        return out


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive bias, as BERT does."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, the same pooling as the sentence-transformers model."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class Branch(nn.Module):
    """Copied top layer(s) + mean pooling: trunk hidden states -> one 384-vector per text."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(BranchLayer() for _ in range(n_layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = attention_bias(mask, hidden.dtype)
        for layer in self.layers:
            hidden = cast(BranchLayer, layer)(hidden, bias)
        return mean_pool(hidden, mask)


class Head(nn.Module):
    """Dropout + linear classifier over the pooled branch vector."""

    def __init__(self, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(HIDDEN, n_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))  # type: ignore[no-any-return]
