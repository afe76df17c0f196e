"""The retrieval backend of one service: its search store and local models, opened on first use.

:class:`RetrievalBackend` holds the configured search store (``search:``), the embedding model and
the chat model (``models:``). Each is opened the first time a use case needs it, so a server that
never searches never loads a model, and all are closed with the service. Tests and benchmarks may
pass an embedder or a store in.

A search store that cannot be used (a damaged file, a cluster that does not answer) or holds no index
of the products searched fails with a message naming the store and the command that fixes it
(:meth:`RetrievalBackend.store_errors`, :meth:`RetrievalBackend.not_indexed`); the models name their
file and ``dataproducts models build`` themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio

from catalog.errors import ConnectorUnavailableError, NotFoundError
from connectors.search_base import SearchStore
from connectors.search_stores import SearchStoreConfig, search_store_for
from embeddings.answer import LocalChatModel
from embeddings.base import Embedder
from embeddings.models import resolve_model
from servers.settings import Settings

__all__ = ["RetrievalBackend"]

_DAMAGED = re.compile(r"not a database|malformed|schema version")


class RetrievalBackend:
    """The search store, embedder and chat model of one service (each opened lazily, closed together)."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, store: SearchStore | None = None):
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._chat: LocalChatModel | None = None
        self._lock = anyio.Lock()

    async def store(self) -> SearchStore:
        async with self._lock:
            if self._store is None:
                config: SearchStoreConfig = self.settings.search
                if config.kind == "embedded" and not Path(config.path).is_absolute():
                    config = config.model_copy(update={"path": str((self.settings.workspace / config.path).resolve())})
                self._store = search_store_for(config)
            return self._store

    def describe_store(self) -> str:
        """The configured search store as a message may name it (never its credentials)."""
        config = self.settings.search
        if config.kind == "embedded":
            path = Path(config.path)
            return f"search store {str(path if path.is_absolute() else (self.settings.workspace / path).resolve())!r}"
        return f"Elasticsearch search store (search.url, index prefix {config.index_prefix!r})"

    @contextmanager
    def store_errors(self) -> Iterator[None]:
        """Add what fixes it to a failure of the search store.

        Raises:
            ConnectorUnavailableError: the store cannot be used; the message says how to repair it.
        """
        try:
            yield
        except ConnectorUnavailableError as exc:
            if self.settings.search.kind != "embedded":
                fix = "check that the cluster at search.url answers, then retry"
            elif _DAMAGED.search(exc.message):
                fix = "the file is damaged: move it away and run `dataproducts index` to build it again"
            else:
                fix = "retry; if it persists, check the file and run `dataproducts index`"
            raise ConnectorUnavailableError(f"{exc.message}; {fix}", orig=exc.orig) from exc

    async def not_indexed(self, products: Sequence[str]) -> NotFoundError | None:
        """The error to raise when none of ``products`` has an index in the store (else None).

        Raises:
            ConnectorError: the store failed.
        """
        store = await self.store()
        for product in products:
            if await store.indexed(product):
                return None
        if len(products) == 1:
            command = f"run `dataproducts index {products[0]}`"
            subject = products[0]
        else:
            command, subject = "run `dataproducts index`", "any of " + ", ".join(products)
        return NotFoundError(f"the {self.describe_store()} holds no index of {subject}; {command} to build it")

    async def embedder(self) -> Embedder:
        """The configured local embedding model (loaded on its first batch).

        Raises:
            EmbeddingError: the model file is missing; the message says how to build it.
        """
        async with self._lock:
            if self._embedder is None:
                from embeddings.llamacpp import LlamaCppEmbedder

                models = self.settings.models
                self._embedder = LlamaCppEmbedder(resolve_model(models.embedding, models.dir), n_threads=models.threads)
            return self._embedder

    async def chat_model(self) -> LocalChatModel:
        """The configured local chat model (loaded on its first answer).

        Raises:
            EmbeddingError: the model file is missing; the message says how to build it.
        """
        async with self._lock:
            if self._chat is None:
                models = self.settings.models
                self._chat = LocalChatModel(resolve_model(models.chat, models.dir), n_threads=models.threads)
            return self._chat

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
        if self._embedder is not None:
            self._embedder.close()
        if self._chat is not None:
            self._chat.close()
