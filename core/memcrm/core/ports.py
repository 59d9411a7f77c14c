"""Interfaces the domain depends on, so memory and decisions need not import the models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class Embedder(Protocol):
    """Turns texts into L2-normalised EMBEDDING_DIM float32 vectors."""

    name: str

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...
