"""The search store the retrieval-layer tests run on: the embedded store once it exists, else a stand-in.

The stand-in (:class:`MemorySearchStore`) is a throwaway for plumbing tests until
``connectors/search_embedded.py`` lands; it follows the :class:`SearchStore` contract (one atomic
``apply`` per run, model checks, Okapi BM25 with k1=1.2, b=0.75, cosine kNN).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from catalog.errors import InvalidRequestError
from connectors.search_base import Chunk, IndexedChunk, SearchHit, SearchStore

__all__ = ["MemorySearchStore", "open_store"]

_WORD = re.compile(r"\w+")


def open_store(path: Path) -> SearchStore:
    """The embedded store at ``path`` when the module exists, else a fresh in-memory stand-in."""
    try:
        from connectors.search_embedded import EmbeddedSearchStore
    except ImportError:
        return MemorySearchStore()
    return EmbeddedSearchStore(path)


class MemorySearchStore(SearchStore):
    kind = "memory"

    def __init__(self) -> None:
        self.chunks: dict[str, tuple[Chunk, npt.NDArray[np.float32]]] = {}
        self.models: dict[str, tuple[str, int]] = {}
        self.applies = 0
        self.fail_next_apply = False

    async def apply(
        self,
        product: str,
        upserts: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        deletes: Sequence[str],
        *,
        model_id: str,
    ) -> None:
        if len(upserts) != len(vectors):
            raise InvalidRequestError("one vector per upsert")
        known = self.models.get(product)
        if upserts and known is not None and known != (model_id, vectors.shape[1]):
            raise InvalidRequestError(f"{product} is indexed with {known}")
        staged = dict(self.chunks)
        for chunk_id in deletes:
            staged.pop(chunk_id, None)
        for chunk, vector in zip(upserts, vectors, strict=True):
            staged[chunk.id] = (chunk, vector)
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise RuntimeError("store failed mid-write")
        self.chunks = staged
        if upserts:
            self.models[product] = (model_id, vectors.shape[1])
        self.applies += 1

    async def indexed(self, product: str) -> list[IndexedChunk]:
        return [
            IndexedChunk(id=i, field_hash=c.content_hash) for i, (c, _) in self.chunks.items() if c.product == product
        ]

    def _candidates(self, products: Sequence[str] | None) -> list[tuple[Chunk, npt.NDArray[np.float32]]]:
        return [(c, v) for c, v in self.chunks.values() if products is None or c.product in products]

    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[SearchHit]:
        docs = self._candidates(products)
        terms = set(_WORD.findall(query.lower()))
        tokenised = [Counter(_WORD.findall(c.text.lower())) for c, _ in docs]
        n = len(docs)
        avg = sum(sum(t.values()) for t in tokenised) / n if n else 0.0
        scored: list[tuple[float, Chunk]] = []
        for (chunk, _), tf in zip(docs, tokenised, strict=True):
            length = sum(tf.values())
            score = 0.0
            for term in terms & tf.keys():
                df = sum(1 for t in tokenised if term in t)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf[term] * 2.2 / (tf[term] + 1.2 * (0.25 + 0.75 * length / avg))
            if score > 0:
                scored.append((score, chunk))
        scored.sort(key=lambda item: (-item[0], item[1].id))
        return [_hit(c, s, r) for r, (s, c) in enumerate(scored[:k], 1)]

    async def knn(
        self, vector: npt.NDArray[np.float32], *, k: int, products: Sequence[str] | None = None
    ) -> list[SearchHit]:
        scored = [(float(np.dot(v, vector)), c) for c, v in self._candidates(products)]
        scored.sort(key=lambda item: (-item[0], item[1].id))
        return [_hit(c, s, r) for r, (s, c) in enumerate(scored[:k], 1)]

    async def drop(self, product: str) -> None:
        self.chunks = {i: cv for i, cv in self.chunks.items() if cv[0].product != product}
        self.models.pop(product, None)


def _hit(chunk: Chunk, score: float, rank: int) -> SearchHit:
    return SearchHit(
        product=chunk.product,
        key=chunk.key,
        field=chunk.field,
        chunk=chunk.chunk,
        text=chunk.text,
        score=score,
        rank=rank,
    )
