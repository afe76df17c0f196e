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

Each index run also records, per product, the source's ``as_of`` it brought the index in step with
and when (:class:`IndexState`, read by :meth:`SearchStore.index_states`): the search index is a
replica of the product like the analytical one, and says how old it is the same way. The store
itself keeps it, written with the run's chunks (one transaction in the embedded store, the index
mapping's ``_meta`` in Elasticsearch), so it can never describe chunks other than those stored.

Every record of a chunk is a :class:`ChunkRef` (product, primary key, field, chunk number) with more
fields; the ref spells the chunk's id, citation and prompt label, so each is written one way only.

Implementations: ``connectors/search_embedded.py`` (one local file, single machine) and
``connectors/search_elasticsearch.py`` (a cluster). One contract test suite runs on both.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Annotated, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, BaseModel, Field
from pydantic.dataclasses import dataclass

__all__ = [
    "Chunk",
    "ChunkHit",
    "ChunkRef",
    "IndexState",
    "IndexedChunk",
    "SearchStore",
    "chunk_id",
    "key_token",
    "row_id",
    "split_chunk_id",
]


def _pairs(key: Mapping[str, Any], separator: str) -> str:
    """``k=v`` for each primary-key value, in key order: how every text form of a chunk shows its key."""
    return separator.join(f"{k}={v}" for k, v in key.items())


def row_id(product: str, key: Mapping[str, Any]) -> str:
    """The id of one product row, the start of its chunks' ids: ``product|k=v|…``."""
    return f"{product}|{_pairs(key, '|')}"


def chunk_id(product: str, key: Mapping[str, Any], field: str, chunk: int) -> str:
    """The id of one chunk, as every search store keeps it: ``product|k=v|…|field|chunk``.

    Stores persist it (the embedded store's ``id`` column; Elasticsearch's ``id`` field and, hashed, its
    ``_id``), so changing this text would orphan every existing index.
    """
    return f"{row_id(product, key)}|{field}|{chunk}"


def split_chunk_id(chunk_id: str) -> tuple[str, str, int]:
    """``(row id, field, chunk number)`` of a :func:`chunk_id`."""
    row, field, chunk = chunk_id.rsplit("|", 2)
    return row, field, int(chunk)


def key_token(key: Mapping[str, Any]) -> str:
    """A primary key as text for telling rows apart exactly: types kept (``1`` is not ``"1"``), key order ignored.

    Ids show key values as plain text, so distinct keys may share one (``{"a": "1|b=2", "b": "3"}`` and
    ``{"a": "1", "b": "2|b=3"}``); a governance check, where one row's visibility must never vouch for
    another's, compares keys by this token instead.
    """
    return json.dumps(key, sort_keys=True, default=str)


@dataclass(frozen=True)
class ChunkRef:
    """Where a piece of product text comes from: one chunk of one text field of one product row.

    Every record of a chunk (:class:`Chunk`, :class:`ChunkHit`, a retrieved chunk, a prompt passage)
    is a ``ChunkRef`` with more fields, and its text forms are spelled here: :attr:`id` (what the
    stores keep and what tells chunks apart), :attr:`citation` (what clients see) and :attr:`source`
    (what a prompt shows).
    """

    product: str
    key: Annotated[dict[str, Any], Field(description="primary-key values of the row, JSON-compatible")]
    field: str
    chunk: Annotated[int, Field(ge=0)]

    @property
    def id(self) -> str:
        """:func:`chunk_id`, e.g. ``docs.handbook|filename=a.md|content|2``."""
        return chunk_id(self.product, self.key, self.field, self.chunk)

    @property
    def key_token(self) -> str:
        """:func:`key_token` of the chunk's primary key."""
        return key_token(self.key)

    @property
    def citation(self) -> str:
        """``product[key=value,…].field#chunk``, e.g. ``docs.handbook[filename=a.md].content#2``."""
        return f"{self.product}[{_pairs(self.key, ',')}].{self.field}#{self.chunk}"

    @property
    def source(self) -> str:
        """``product (key=value, …) field#chunk``, e.g. ``docs.handbook (filename=a.md) content#2``."""
        return f"{self.product} ({_pairs(self.key, ', ')}) {self.field}#{self.chunk}"


@dataclass(frozen=True)
class Chunk(ChunkRef):
    """One piece of one text field of one product row, as a store indexes it."""

    text: str
    content_hash: Annotated[
        str, Field(description="hash of the field text and the chunk settings (shared by its chunks)")
    ]


class IndexedChunk(BaseModel):
    """What the store knows of a stored chunk, for incremental runs."""

    id: str
    field_hash: str


class IndexState(BaseModel):
    """A product's index as a replica: the source state it holds (``as_of``), when a run last brought it
    in step (``indexed_at``), and how many chunks it holds. Both times are None for an index written
    before they were recorded (the next index run records them)."""

    product: str
    as_of: AwareDatetime | None = None
    indexed_at: AwareDatetime | None = None
    chunks: int = 0


@dataclass(frozen=True)
class ChunkHit(ChunkRef):
    """One ranked chunk; ``score`` is the store's (BM25 or cosine), ``rank`` starts at 1."""

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
        as_of: datetime | None = None,
    ) -> None:
        """Write one index run of ``product``: ``upserts`` (with ``vectors`` row by row) and chunk ids to delete.

        ``as_of`` (aware) is the source state the run read; with it the store records the product's
        :class:`IndexState` along with the chunks, also when there is nothing to upsert or delete (the
        index is then in step as of a newer state). Without it nothing of the state changes.

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

    async def index_states(self, products: Sequence[str]) -> dict[str, IndexState]:
        """The :class:`IndexState` of each of ``products`` the store holds an index of (others are absent).

        Raises:
            ConnectorError: the store failed.
        """
        return {}

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
