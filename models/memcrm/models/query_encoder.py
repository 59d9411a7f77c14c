"""A low-latency encoder for one short query at a time: the recall and search path.

Same model, tokenisation and pooling as ``Encoder`` (all-MiniLM-L6-v2, mean pooling, L2
normalisation), with two differences that matter for one query on one CPU thread:

- The transformer runs directly, without sentence-transformers' batching machinery (about
  1.5 ms of Python per call).
- On CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX) the transformer runs in bfloat16.
  A single short query is bound by reading the weights: 6 layers of float32 weights are 42 MB and
  do not fit a typical L3 cache; half of that does. Measured on this project's machine (AMD EPYC,
  one thread, LoCoMo questions): 11.1 ms per query with ``Encoder.encode``, 5.9 ms here. Query
  vectors differ from ``Encoder``'s by a cosine of at least 0.9999; stored memories keep their
  float32 vectors, and ``precision="float32"`` turns bfloat16 off.

One text (a recall query, a decision's current message) skips the transformers module stack as
well: :class:`_LeanBert` runs the same BERT layers as plain functional calls on the same weights
(one matrix product for query, key and value, no pooler, no attention mask: one text has no
padding). It gives bit-identical hidden states -- checked on a probe text when the encoder is
built, else the module stack is used -- for about 20% less CPU (airline tweets, ~30 tokens,
bfloat16: 9.7 -> 7.5 ms). Several texts go through the module stack (padding needs the mask).

In bfloat16 the lean forward also keeps its matrices prepacked in oneDNN's blocked layout (what
``torch.compile`` does to frozen linear weights on CPU), so the matrix products, 80% of the
forward, do not reorder the weights on every call: 7.5 -> 5.9 ms per airline tweet on this
project's machine, with hidden states still bit-identical to the module stack's (402 of 402
airline tweets, 1 to 256 tokens, checked with the probe as above). Packed float32 products round
differently, so float32 keeps plain ``linear``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from numpy.typing import NDArray

from memcrm.core.types import EMBEDDING_DIM
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import tokenize
from memcrm.models.enrichment_net import mean_pool

Precision = Literal["auto", "float32", "bfloat16"]


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (otherwise bfloat16 is emulated: slow)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


class QueryEncoder:
    """``Encoder.encode`` for a few short texts at a time, faster; thread-safe."""

    def __init__(self, encoder: Encoder | None = None, *, precision: Precision = "auto") -> None:
        self._encoder = encoder or Encoder(threads=1)
        self.name = self._encoder.name
        self._st: Any = self._encoder.model
        self.precision = self.resolve(precision)
        bert: Any = self._st[0].auto_model
        if self.precision == "bfloat16":
            # A copy: the float32 model stays as it is for whoever else shares the encoder.
            bert = copy.deepcopy(bert).to(torch.bfloat16)
        self._bert = bert.eval()
        self._lock = threading.Lock()
        self._lean = _LeanBert.verified(self._bert, tokenize(self._st, [_PROBE]))

    @staticmethod
    def resolve(precision: Precision) -> Literal["float32", "bfloat16"]:
        """The precision ``precision`` means on this CPU."""
        if precision == "auto":
            return "bfloat16" if native_bfloat16() else "float32"
        return precision

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock, torch.inference_mode():
            batch = tokenize(self._st, list(texts))
            if self._lean is not None and len(texts) == 1:
                hidden = self._lean(batch["input_ids"]).float()
            else:
                hidden = self._bert(**batch).last_hidden_state.float()
            vectors = F.normalize(mean_pool(hidden, batch["attention_mask"]), p=2.0, dim=1)
        return np.asarray(vectors.numpy(), dtype=np.float32)


# A text with a few word pieces, punctuation and a number: what the lean path is checked on.
_PROBE = "My suitcase never arrived in Boston (flight 1234) and nobody answers, again!"


class _Linear:
    """``F.linear`` with fixed weights, optionally prepacked for oneDNN (see the module)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, packed: bool) -> None:
        self.packed = packed
        self._bias = bias
        if packed:
            # The second argument is a hint of the rows per call (a text's tokens).
            self._weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_ROWS)
            self._call = self._packed
        else:
            self._weight = weight
            self._call = self._plain

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(x)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._weight, self._bias)

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, self._weight, self._bias, "none", [], ""
        )
        return out


# Rows per call the packed layout is chosen for: about an airline tweet's tokens.
_PACK_ROWS = 32


class _Layer(NamedTuple):
    """One BERT layer's weights as the lean forward uses them (query, key, value stacked)."""

    qkv: _Linear
    scale: float
    out: _Linear
    out_norm: tuple[torch.Tensor, torch.Tensor]
    inner: _Linear
    ffn_out: _Linear
    ffn_norm: tuple[torch.Tensor, torch.Tensor]


class _LeanBert:
    """A BERT encoder's forward for one unpadded text as functional calls on its weights.

    The operations and their order are those of ``transformers``' ``BertModel`` with SDPA
    attention (embeddings summed word + token type 0 + position, layer norm; per layer
    attention, residual + layer norm, GELU feed-forward, residual + layer norm), so the hidden
    states are bit-identical; :meth:`verified` builds it only when they are on a probe.
    """

    def __init__(self, bert: Any, *, packed: bool = False) -> None:
        """``packed``: prepack the matrices for oneDNN (bfloat16 weights only)."""
        config = bert.config
        if config.hidden_act != "gelu" or getattr(config, "is_decoder", False):
            raise ValueError("not an encoder-only BERT with exact GELU")
        embeddings = bert.embeddings
        self._word = embeddings.word_embeddings.weight
        self._token_type = embeddings.token_type_embeddings.weight[0]
        self._position = embeddings.position_embeddings.weight
        self._norm = (embeddings.LayerNorm.weight, embeddings.LayerNorm.bias)
        self._eps = float(config.layer_norm_eps)
        self._width = (int(config.hidden_size),)
        self._heads = int(config.num_attention_heads)
        self._head_dim = int(config.hidden_size) // self._heads
        if packed and self._word.dtype != torch.bfloat16:
            raise ValueError("only bfloat16 weights are packed")

        def linear(weight: torch.Tensor, bias: torch.Tensor) -> _Linear:
            return _Linear(weight, bias, packed=packed)

        self._layers = [
            _Layer(
                qkv=linear(
                    torch.cat(
                        [a.self.query.weight, a.self.key.weight, a.self.value.weight]
                    ).contiguous(),
                    torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias]),
                ),
                scale=float(a.self.scaling),
                out=linear(a.output.dense.weight, a.output.dense.bias),
                out_norm=(a.output.LayerNorm.weight, a.output.LayerNorm.bias),
                inner=linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                ffn_out=linear(layer.output.dense.weight, layer.output.dense.bias),
                ffn_norm=(layer.output.LayerNorm.weight, layer.output.LayerNorm.bias),
            )
            for layer in bert.encoder.layer
            for a in [layer.attention]
        ]

    @classmethod
    def verified(cls, bert: Any, probe: dict[str, torch.Tensor]) -> _LeanBert | None:
        """The lean forward -- packed when that is bit-identical to ``bert`` on ``probe``, else
        plain when that is -- or None."""
        with torch.inference_mode():
            want = bert(**probe).last_hidden_state
        for packed in (True, False):
            try:
                lean = cls(bert, packed=packed)
                with torch.inference_mode():
                    if torch.equal(lean(probe["input_ids"]), want):
                        return lean
            except (AttributeError, ValueError, RuntimeError, TypeError):
                continue
        return None

    @property
    def packed(self) -> bool:
        return self._layers[0].qkv.packed

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(1, n) token ids -> (1, n, hidden) last hidden states."""
        n = int(input_ids.shape[1])
        heads, dim, width, eps = self._heads, self._head_dim, self._width, self._eps
        x = F.embedding(input_ids, self._word) + self._token_type
        x = F.layer_norm(x + self._position[:n], width, *self._norm, eps)
        for layer in self._layers:
            qkv = layer.qkv(x)
            q, k, v = qkv.view(1, n, 3, heads, dim).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, scale=layer.scale)
            attended = layer.out(attended.transpose(1, 2).reshape(1, n, -1))
            x = F.layer_norm(attended + x, width, *layer.out_norm, eps)
            inner = F.gelu(layer.inner(x))
            x = F.layer_norm(layer.ffn_out(inner) + x, width, *layer.ffn_norm, eps)
        return x
