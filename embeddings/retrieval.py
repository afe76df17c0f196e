"""Hybrid retrieval over any :class:`SearchStore`: BM25 and vector kNN fused by reciprocal rank fusion.

:func:`hybrid_search` asks the store for the ``candidates`` best chunks by BM25 and the
``candidates`` nearest by cosine, and fuses the two rankings with reciprocal rank fusion (Cormack,
Clarke & Büttcher, SIGIR 2009)::

    rrf(chunk) = Σ over the rankings r that hold it   1 / (rrf_k + rank_r(chunk))      (ranks start at 1)

with ``rrf_k = 60``, the constant of the paper (:func:`fuse_rankings`, which also fuses the keyword
and semantic rankings of ``search_products``), which damps the weight of the very first ranks so
that agreement between the rankings counts more than one ranking's top spot. Only ranks are used, so
BM25 scores and cosines need no calibration against each other, and the result is the same on every
store. ``mode="bm25"`` or ``"dense"`` return one ranking alone, scored by the store.

Each :class:`RetrievedChunk` cites product, primary key, field and chunk number; governance
(dropping hits whose row the principal may not read, hiding masked fields) is the service layer's.

Catalog search: :func:`index_catalog` indexes each product's description — name, title,
description, tags, columns with their descriptions — as chunks of the reserved product ``_catalog``,
keyed by product name, so :func:`catalog_search` can rank products by meaning as well as keywords.
Reserved products (a leading ``_``) never appear in :func:`hybrid_search` results unless asked for by
name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
from pydantic.dataclasses import dataclass

from catalog.contract import Chunking, ProductContract
from connectors.search_base import ChunkHit, ChunkRef, SearchStore
from embeddings._sync import IndexReport, IndexRun
from embeddings.base import Embedder

__all__ = [
    "CATALOG_PRODUCT",
    "RRF_K",
    "RetrievedChunk",
    "catalog_document",
    "catalog_search",
    "fuse_rankings",
    "group_by_row",
    "hybrid_search",
    "index_catalog",
    "reciprocal_rank_fusion",
]

#: The constant of reciprocal rank fusion (Cormack et al. 2009).
RRF_K = 60
#: The reserved product holding one document per catalog product.
CATALOG_PRODUCT = "_catalog"
CATALOG_CHUNKING = Chunking(size=1000, overlap=100)

Mode = Literal["hybrid", "bm25", "dense"]


@dataclass(frozen=True)
class RetrievedChunk(ChunkRef):
    """One retrieved chunk and where it comes from (its :attr:`~ChunkRef.citation`).

    ``score`` is the fused RRF score in hybrid mode, the store's BM25 score or cosine otherwise;
    ``bm25_rank`` / ``dense_rank`` are its ranks in each list (None when absent from that list);
    ``matched`` is how many chunks of its row matched when hits are grouped per row (:func:`group_by_row`).
    """

    text: str
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None
    matched: int = 1


K = TypeVar("K", bound=Hashable)


def fuse_rankings(rankings: Mapping[str, Sequence[K]], *, rrf_k: int = RRF_K) -> list[tuple[K, float, dict[str, int]]]:
    """Items of named rankings fused by reciprocal rank fusion, best first: ``(item, score, ranks)``.

    ``ranks`` maps each ranking's name to the item's rank there (from 1). Ties are broken by the best
    single rank, then by the order of first appearance, so the output is deterministic; a ranking
    listing an item twice counts its best rank only.

    Raises:
        ValueError: ``rrf_k`` is negative.
    """
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be at least 0, not {rrf_k}")
    scores: dict[K, float] = {}
    ranks: dict[K, dict[str, int]] = {}
    for name, ranking in rankings.items():
        for position, item in enumerate(ranking, 1):
            seen = ranks.setdefault(item, {})
            if name in seen:
                continue
            seen[name] = position
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + position)
    order = sorted(scores, key=lambda item: (-scores[item], min(ranks[item].values())))
    return [(item, scores[item], ranks[item]) for item in order]


def reciprocal_rank_fusion(
    rankings: dict[str, Sequence[ChunkHit]], *, rrf_k: int = RRF_K, limit: int | None = None
) -> list[RetrievedChunk]:
    """Fuse named rankings of hits (e.g. ``{"bm25": [...], "dense": [...]}``) by :func:`fuse_rankings`;
    only the ``limit`` best when given (the others are never built).

    Raises:
        ValueError: ``rrf_k`` is negative.
    """
    first: dict[str, ChunkHit] = {}
    for hits in rankings.values():
        for hit in hits:
            first.setdefault(hit.id, hit)
    ids = {name: [h.id for h in hits] for name, hits in rankings.items()}
    return [
        _retrieved(first[hit_id], score, bm25_rank=ranks.get("bm25"), dense_rank=ranks.get("dense"))
        for hit_id, score, ranks in fuse_rankings(ids, rrf_k=rrf_k)[:limit]
    ]


def _retrieved(hit: ChunkHit, score: float, *, bm25_rank: int | None, dense_rank: int | None) -> RetrievedChunk:
    return RetrievedChunk(hit.product, dict(hit.key), hit.field, hit.chunk, hit.text, score, bm25_rank, dense_rank)


async def hybrid_search(
    store: SearchStore,
    embedder: Embedder,
    query: str,
    *,
    k: int = 10,
    products: Sequence[str] | None = None,
    mode: Mode = "hybrid",
    candidates: int = 100,
    rrf_k: int = RRF_K,
) -> list[RetrievedChunk]:
    """The ``k`` best chunks for ``query``, optionally only of ``products`` (None: every non-reserved product).

    Pass the products the principal may read: filtering in the store keeps ``k`` results where
    filtering afterwards would lose some.

    Raises:
        ValueError: ``k`` or ``candidates`` below 1, or an unknown ``mode``.
        EmbeddingError: the model failed (dense and hybrid modes).
        ConnectorError: the store failed.
    """
    if k < 1 or candidates < 1:
        raise ValueError(f"k and candidates must be at least 1, not {k} and {candidates}")
    if mode not in ("hybrid", "bm25", "dense"):
        raise ValueError(f"unknown mode {mode!r}; use hybrid, bm25 or dense")
    if not query.strip() or (products is not None and not products):
        return []
    depth = max(candidates, k)
    found: dict[str, list[ChunkHit]] = {"bm25": [], "dense": []}

    async def lexical() -> None:
        found["bm25"] = _unreserved(await store.bm25(query, k=depth, products=products), products)

    async def semantic() -> None:
        vector = await anyio.to_thread.run_sync(embedder.embed, query)
        found["dense"] = _unreserved(await store.knn(vector, k=depth, products=products), products)

    try:
        async with anyio.create_task_group() as group:  # BM25 runs while the query is embedded
            if mode in ("hybrid", "bm25"):
                group.start_soon(lexical)
            if mode in ("hybrid", "dense"):
                group.start_soon(semantic)
    except ExceptionGroup as failed:  # raise the store's or the model's own error, not a group
        raise failed.exceptions[0] from None
    bm25, dense = found["bm25"], found["dense"]
    if mode == "bm25":
        return [_retrieved(h, h.score, bm25_rank=i, dense_rank=None) for i, h in enumerate(bm25[:k], 1)]
    if mode == "dense":
        return [_retrieved(h, h.score, bm25_rank=None, dense_rank=i) for i, h in enumerate(dense[:k], 1)]
    return reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, rrf_k=rrf_k, limit=k)


def group_by_row(chunks: Iterable[RetrievedChunk]) -> list[RetrievedChunk]:
    """One hit per row, in the order of each row's best chunk: that chunk, with ``matched`` set to the
    number of the row's chunks among ``chunks`` (which must be best first).

    An agent asking for ten hits wants ten documents, not several chunks each of a few: on SciFact
    (300 claims, 1,000 abstracts in 512-character chunks; ``bench/retrieval_eval.py``) the ten best
    chunks held 5.9 distinct abstracts on average (nDCG@10 0.820), ten rows 10 (nDCG@10 0.829).
    """
    best: dict[tuple[str, str], RetrievedChunk] = {}
    counts: dict[tuple[str, str], int] = {}
    for chunk in chunks:
        row = (chunk.product, chunk.key_token)
        best.setdefault(row, chunk)
        counts[row] = counts.get(row, 0) + 1
    return [dataclasses.replace(chunk, matched=counts[row]) for row, chunk in best.items()]


def _unreserved(hits: list[ChunkHit], products: Sequence[str] | None) -> list[ChunkHit]:
    if products is not None:
        return hits
    return [h for h in hits if not h.product.startswith("_")]


def catalog_document(contract: ProductContract) -> str:
    """The text that stands for a product in catalog search: name, title, description, tags, columns."""
    lines = [f"{contract.name}: {contract.title}", contract.description]
    if contract.tags:
        lines.append("Tags: " + ", ".join(contract.tags))
    lines += [f"{c.name}: {c.description}" for c in contract.columns]
    lines += [f"{m.name}: {m.description}" for m in contract.metrics]
    return "\n".join(lines)


async def index_catalog(contracts: Iterable[ProductContract], store: SearchStore, embedder: Embedder) -> IndexReport:
    """Make the ``_catalog`` product hold one document per contract (incrementally, one store write).

    Products missing from ``contracts`` lose their catalog chunks.

    Raises:
        EmbeddingError: the model failed (nothing was written).
        ConnectorError: the store failed (the previous catalog index stays usable).
        InvalidRequestError: the store holds ``_catalog`` with another model.
    """
    stored = await store.indexed(CATALOG_PRODUCT)
    run = IndexRun(CATALOG_PRODUCT, store, embedder, chunking=CATALOG_CHUNKING, stored=stored)
    for contract in contracts:
        run.add({"name": contract.name}, {"description": catalog_document(contract)})
    return await run.finish()


async def catalog_search(
    store: SearchStore, embedder: Embedder, text: str, k: int = 10, *, mode: Mode = "hybrid"
) -> list[tuple[str, float]]:
    """Product names ranked for ``text`` by hybrid search over the catalog (best chunk per product).

    Raises:
        EmbeddingError: the model failed.
        ConnectorError: the store failed.
    """
    hits = await hybrid_search(store, embedder, text, k=max(k * 4, 20), products=[CATALOG_PRODUCT], mode=mode)
    ranked: dict[str, float] = {}
    for hit in hits:
        name = str(hit.key.get("name"))
        ranked.setdefault(name, hit.score)
    return list(ranked.items())[:k]
