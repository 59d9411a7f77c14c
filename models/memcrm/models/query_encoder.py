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
well and runs ``memcrm.models.lean_bert``: the same layers on the same weights, bit-identical
hidden states, about half the CPU of the module stack and no GIL held while it runs. Several texts
go through the module stack (padding needs the mask).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from numpy.typing import NDArray

from memcrm.core.types import EMBEDDING_DIM
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import tokenize
from memcrm.models.enrichment_net import mean_pool
from memcrm.models.lean_bert import lean_forward

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
        self._lean = lean_forward(self._bert, [tokenize(self._st, [text]) for text in _PROBES])

    @staticmethod
    def resolve(precision: Precision) -> Literal["float32", "bfloat16"]:
        """The precision ``precision`` means on this CPU."""
        if precision == "auto":
            return "bfloat16" if native_bfloat16() else "float32"
        return precision

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        # The tokenizer is not safe to call from several threads at once; the forward is (two
        # decisions in one process encode their messages side by side, holding no GIL).
        with self._lock:
            batch = tokenize(self._st, list(texts))
        with torch.inference_mode():
            if self._lean is not None and len(texts) == 1:
                hidden = self._lean(batch["input_ids"]).float()
            else:
                hidden = self._bert(**batch).last_hidden_state.float()
            vectors = F.normalize(mean_pool(hidden, batch["attention_mask"]), p=2.0, dim=1)
        return np.asarray(vectors.numpy(), dtype=np.float32)


# What the lean path is checked on: a text with a few word pieces, punctuation and a number,
# and a shorter one (a lean forward must not be tied to one length).
_PROBES = (
    "My suitcase never arrived in Boston (flight 1234) and nobody answers, again!",
    "thanks!",
)
