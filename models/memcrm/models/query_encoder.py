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
            hidden = self._bert(**batch).last_hidden_state.float()
            vectors = F.normalize(mean_pool(hidden, batch["attention_mask"]), p=2.0, dim=1)
        return np.asarray(vectors.numpy(), dtype=np.float32)
