"""The embedder contract: ``model_id``, ``dimensions`` and one abstract ``embed_batch``.

Everything else is provided: ``embed`` / ``embed_many`` return L2-normalised float32 vectors and
never embed the same text twice (a content-hash cache keyed by model and text). Implementations load
their model lazily, on the first batch. The API is synchronous (llama.cpp is); async callers run it
in a worker thread.
"""

from __future__ import annotations

import abc
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "Vectors", "content_hash"]

Vectors: TypeAlias = npt.NDArray[np.float32]


def content_hash(text: str) -> str:
    """sha256 of the text: what the cache and the incremental index flow key on."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Embedder(abc.ABC):
    """Base class of every embedding model.

    Subclasses set ``model_id`` and ``dimensions`` (may be learnt at load time) and implement
    :meth:`embed_batch`. ``truncated`` counts inputs cut to the model's token limit (never silent).
    """

    model_id: str
    dimensions: int

    def __init__(self, *, cache_size: int = 50_000) -> None:
        self.truncated = 0
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @abc.abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Embed texts as one or more model batches: an ``(len(texts), dimensions)`` array, rows L2-normalised.

        Raises:
            EmbeddingError: the model cannot be loaded or fails.
        """

    def embed(self, text: str) -> Vectors:
        """One text as a ``(dimensions,)`` vector."""
        return self.embed_many([text])[0]

    def embed_many(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> Vectors:
        """Embed texts, reusing cached vectors of texts seen before; ``progress(n)`` after each batch."""
        keys = [content_hash(t) for t in texts]
        out = np.empty((len(texts), self.dimensions if texts else 0), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is None:
                    missing.setdefault(key, []).append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = hit
        todo = list(missing)
        if progress and len(texts) > len(todo):
            progress(sum(1 for k in keys if k not in missing))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            vectors = self.embed_batch([texts[missing[k][0]] for k in chunk])
            with self._cache_lock:
                for key, vector in zip(chunk, vectors, strict=True):
                    for i in missing[key]:
                        out[i] = vector
                    self._cache[key] = vector
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            if progress:
                progress(sum(len(missing[k]) for k in chunk))
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model. Idempotent."""
