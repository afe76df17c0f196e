"""Warming the embedded search store when a server starts, off the request path.

The embedded store builds its in-memory BM25 index and loads each product's vectors the first time a
query needs them; until the index is built, FTS5 ranks (same order, slower). A server starting with
:func:`search_store_warmed` builds both in the background at start-up instead, so the first
``search_documents`` after a start is ranked by the index. A failure is logged and the server serves
on (the store then builds lazily, as without warming). A store with no file yet is left alone: there is
nothing to warm, and warming would create an empty file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from catalog.errors import DataProductsError
from connectors.search_embedded import EmbeddedSearchStore
from servers.retrieval_backend import RetrievalBackend

__all__ = ["search_store_warmed", "warm_search_store"]

log = logging.getLogger(__name__)


async def warm_search_store(retrieval: RetrievalBackend) -> bool:
    """Warm the configured store if it is an existing embedded file; True when warmed, False otherwise
    (another kind of store, no file yet, or a failure, which is logged)."""
    try:
        store = await retrieval.store()
        if not isinstance(store, EmbeddedSearchStore) or not store.path.exists():
            return False
        started = time.perf_counter()
        await store.warm()
    except (DataProductsError, ValueError) as exc:
        message = exc.message if isinstance(exc, DataProductsError) else str(exc)
        log.warning("search store not warmed, it builds its BM25 index on first use: %s", message)
        return False
    except Exception:  # start-up never fails on a warm-up
        log.exception("search store not warmed, it builds its BM25 index on first use")
        return False
    log.info("search store %s warmed in %.2f s", store.path, time.perf_counter() - started)
    return True


@asynccontextmanager
async def search_store_warmed(retrieval: RetrievalBackend) -> AsyncIterator[None]:
    """While inside, the store is warmed once in the background (leaving waits for a warm-up under way)."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(warm_search_store, retrieval)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
