"""The search-store contract: chunks of product text, ranked by BM25 and by vector similarity.

A search store keeps :class:`Chunk` rows — one piece of one text field of one product row, with its
embedding — and answers two ranked queries: :meth:`SearchStore.bm25` (lexical, the store's own
engine) and :meth:`SearchStore.knn` (cosine similarity on L2-normalised vectors). Fusing the two
(reciprocal rank fusion) and governing the hits happen above the store, in ``embeddings/`` and the
service layer, the same for every store.

Writes go through :meth:`SearchStore.apply`, one call per index run and product: the store applies
the upserts and deletes so that an interrupted run leaves the previous index usable (the embedded
store commits them in one transaction; Elasticsearch applies them per document, never leaving a
half-written chunk).

Implementations: ``connectors/search_embedded.py`` (one local file, single machine) and
``connectors/search_elasticsearch.py`` (a cluster). One contract test suite runs on both.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Chunk", "ChunkHit", "IndexedChunk", "SearchStore", "chunk_id"]


def chunk_id(product: str, key: dict[str, Any], field: str, chunk: int) -> str:
    """A stable id of one chunk: product, primary-key values (in key order), field and chunk number."""
    key_text = "|".join(f"{k}={key[k]}" for k in key)
    return f"{product}|{key_text}|{field}|{chunk}"


class Chunk(BaseModel):
    """One piece of one text field of one product row."""

    model_config = ConfigDict(frozen=True)

    product: str
    key: dict[str, Any] = Field(description="primary-key values of the row, JSON-compatible")
    field: str
    chunk: int = Field(ge=0)
    text: str
    content_hash: str = Field(description="hash of the field text and the chunk settings (shared by its chunks)")

    @property
    def id(self) -> str:
        return chunk_id(self.product, self.key, self.field, self.chunk)


class IndexedChunk(BaseModel):
    """What the store knows of a stored chunk, for incremental runs."""

    id: str
    field_hash: str


class ChunkHit(BaseModel):
    """One ranked chunk; ``score`` is the store's (BM25 or cosine), ``rank`` starts at 1."""

    product: str
    key: dict[str, Any]
    field: str
    chunk: int
    text: str
    score: float
    rank: int


class SearchStore(abc.ABC):
    """Base class of search stores. Sync drivers run in worker threads inside the store."""

    kind: ClassVar[str]

    @abc.abstractmethod
    async def apply(
        self,
        product: str,
        upserts: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        deletes: Sequence[str],
        *,
        model_id: str,
    ) -> None:
        """Write one index run of ``product``: ``upserts`` (with ``vectors`` row by row) and chunk ids to delete.

        Raises:
            ConnectorError: the store failed; the previous index stays usable.
            InvalidRequestError: ``model_id``/dimensions differ from what the product was indexed with.
        """

    @abc.abstractmethod
    async def indexed(self, product: str) -> list[IndexedChunk]:
        """Every stored chunk id of ``product`` with the hash of the field text it was made from."""

    @abc.abstractmethod
    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[ChunkHit]:
        """The ``k`` best chunks for ``query`` by BM25, optionally only of ``products``."""

    @abc.abstractmethod
    async def knn(
        self, vector: npt.NDArray[np.float32], *, k: int, products: Sequence[str] | None = None
    ) -> list[ChunkHit]:
        """The ``k`` chunks nearest to ``vector`` (cosine), optionally only of ``products``."""

    @abc.abstractmethod
    async def drop(self, product: str) -> None:
        """Remove every chunk of ``product``."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
