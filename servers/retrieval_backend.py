"""The retrieval backend of one service: its search store and local models, opened on first use.

:class:`RetrievalBackend` holds the configured search store (``search:``), the embedding model and
the chat model (``models:``). Each is opened the first time a use case needs it, so a server that
never searches never loads a model, and all are closed with the service. Tests and benchmarks may
pass an embedder or a store in.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from connectors.search_base import SearchStore
from connectors.search_stores import SearchStoreConfig, search_store_for
from embeddings.answer import LocalChatModel
from embeddings.base import Embedder
from embeddings.models import resolve_model
from servers.settings import Settings

__all__ = ["RetrievalBackend"]


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
