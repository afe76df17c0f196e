"""Deterministic stand-ins for plumbing tests only (never for retrieval quality)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from embeddings.base import Embedder, Vectors

__all__ = ["FakeEmbedder"]

_WORD = re.compile(r"\w+")


class FakeEmbedder(Embedder):
    """Bag of hashed words → a normalised vector: texts sharing words are close. Counts its calls."""

    model_id = "fake-hashed-words"

    def __init__(self, dimensions: int = 64) -> None:
        super().__init__()
        self.dimensions = dimensions
        self.batches: list[list[str]] = []

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                slot = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=4).digest(), "little")
                out[row, slot % self.dimensions] += 1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else out[row]
        return out

    @property
    def embedded_texts(self) -> int:
        return sum(len(b) for b in self.batches)
