"""Retrieval for the service layer: the search store and the local embedder, governed like every read.

:class:`Retrieval` owns the search store and the embedding model (both opened lazily, closed with the
service) and turns store hits into what a principal may see:

1. hybrid search (BM25 + vectors, reciprocal rank fusion) runs only over products the principal may
   read (``products`` filter in the store, so ``k`` results survive);
2. hits on a field masked for the principal are dropped (masked fields are not indexed anyway);
3. the hits' primary keys are re-read through the governed source of the product
   (:func:`servers._visible.visible_keys`): a row outside the principal's row filter is never returned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from catalog.contract import ProductContract
from catalog.errors import EmbeddingError
from catalog.policy import govern
from catalog.principal import Principal
from connectors.base import Connector
from connectors.search_base import SearchStore
from connectors.search_stores import SearchStoreConfig, search_store_for
from embeddings.base import Embedder
from embeddings.index import IndexReport, index_product
from embeddings.models import resolve_model
from embeddings.retrieval import CATALOG_PRODUCT, RRF_K, RetrievedChunk, catalog_search, hybrid_search, index_catalog
from servers._visible import key_token, visible_keys
from servers.settings import Settings

__all__ = ["Retrieval", "rank_fusion"]

log = logging.getLogger(__name__)

ConnectorLookup = Callable[[str], Awaitable[Connector]]


class Retrieval:
    """The search store and embedder of one service, and the governed search over them."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, store: SearchStore | None = None):
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._lock = anyio.Lock()

    async def store(self) -> SearchStore:
        async with self._lock:
            if self._store is None:
                config: SearchStoreConfig = self.settings.search
                if config.kind == "embedded" and not Path(config.path).is_absolute():
                    config = config.model_copy(update={"path": str((self.settings.workspace / config.path).resolve())})
                self._store = search_store_for(config)
            return self._store

    async def embedder(self) -> Embedder:
        """The configured local embedding model (loaded on its first batch).

        Raises:
            EmbeddingError: the model file is missing; the message says how to build it.
        """
        async with self._lock:
            if self._embedder is None:
                from embeddings.llamacpp import LlamaCppEmbedder

                models = self.settings.models
                path = resolve_model(models.embedding, models.dir)
                self._embedder = LlamaCppEmbedder(path, n_threads=models.threads)
            return self._embedder

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
        if self._embedder is not None:
            self._embedder.close()

    # -- indexing (operators, not agents) -----------------------------------------------------------

    async def index(
        self, contract: ProductContract, connector: Connector, *, hash_salt: str, rebuild: bool, progress: Any = None
    ) -> IndexReport:
        """Index one product's retrieval fields (incremental unless ``rebuild``).

        Raises:
            InvalidRequestError: as :func:`embeddings.index.index_product` (e.g. no ``retrieval:`` section).
        """
        return await index_product(
            contract,
            connector,
            await self.store(),
            await self.embedder(),
            dialect=connector.dialect,
            hash_salt=hash_salt,
            rebuild=rebuild,
            limits=self.settings.limits.model_copy(update={"max_rows": 5000, "max_bytes": 256_000_000}),
            progress=progress,
        )

    async def index_catalog(self, contracts: Sequence[ProductContract]) -> IndexReport:
        """Index product descriptions for semantic ``search_products``."""
        return await index_catalog(contracts, await self.store(), await self.embedder())

    # -- governed search ----------------------------------------------------------------------------

    async def search(
        self,
        principal: Principal,
        text: str,
        *,
        readable: Sequence[ProductContract],
        connector_for: ConnectorLookup,
        hash_salt: str,
        k: int,
    ) -> list[RetrievedChunk]:
        """The ``k`` best chunks of ``readable`` products whose rows and fields the principal may see."""
        views = {c.name: govern(c, principal) for c in readable if c.retrieval is not None}
        if not views:
            return []
        store, embedder = await self.store(), await self.embedder()
        hits = await hybrid_search(store, embedder, text, k=k * 3, products=sorted(views))
        kept = [h for h in hits if h.field not in views[h.product].masked]
        visible: dict[str, set[str]] = {}
        for product in {h.product for h in kept}:
            view = views[product]
            keys = [h.key for h in kept if h.product == product]
            connector = await connector_for(view.contract.source.connection)
            visible[product] = await visible_keys(
                view, connector, keys, limits=self.settings.limits, hash_salt=hash_salt
            )
        return [h for h in kept if key_token(h.key) in visible[h.product]][:k]

    async def rank_products(self, text: str, k: int) -> list[str]:
        """Product names ranked by hybrid search over their indexed descriptions.

        Empty when the catalog is not indexed (``dataproducts index`` does it) or its model is missing
        (logged): ``search_products`` then ranks by keywords alone.
        """
        store = await self.store()
        if not await store.indexed(CATALOG_PRODUCT):
            return []
        try:
            embedder = await self.embedder()
            return [name for name, _ in await catalog_search(store, embedder, text, k)]
        except EmbeddingError as exc:
            log.warning("semantic product search is off: %s", exc.message)
            return []


def rank_fusion(rankings: Sequence[Sequence[str]], *, rrf_k: int = RRF_K) -> list[str]:
    """Ids of several rankings fused by reciprocal rank fusion: score(d) = sum 1 / (rrf_k + rank)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores, key=lambda item: -scores[item])
