"""One incremental index run of one product: diff texts against the store, embed what changed, write once.

Used by :func:`embeddings.index.index_product` (rows read through a connector) and
:func:`embeddings.retrieval.index_catalog` (product descriptions). The caller feeds records — a
primary key and the texts of its fields — with :meth:`IndexRun.add`, then calls
:meth:`IndexRun.finish`, which makes the store hold exactly the chunks of the records fed:

* a field whose hash matches the stored one is left alone (no chunking, no embedding, no write);
* a changed field is re-chunked and re-embedded; its old chunks beyond the new count are deleted;
* fields no longer indexed (dropped from ``text_fields``, masked, or now empty) and records not fed
  (deleted rows) lose all their chunks;
* everything is written by ONE :meth:`SearchStore.apply` at the end, so an exception anywhere before
  it (reading, embedding, cancellation) leaves the previous index untouched.

A field's hash covers the chunk settings too, so changing ``retrieval.chunk`` re-chunks every row, and
the context that heads its chunks (the row's title), so a new title or a context first used re-embeds
the row once.
New chunks and their vectors stay in memory until the final write (about 1.6 kB per chunk for a
384-dimensional model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import anyio.to_thread
import numpy as np

from catalog.contract import Chunking
from connectors.search_base import Chunk, SearchStore, row_id, split_chunk_id
from embeddings.base import Embedder, Vectors, content_hash
from embeddings.chunking import chunk_text

__all__ = ["IndexProgress", "IndexReport", "IndexRun", "ProgressCallback", "field_hash"]

EMBED_BATCH = 64


@dataclass
class IndexReport:
    """What one index run did. ``skipped_fields`` maps a text field that was not indexed to the reason."""

    product: str
    rows_seen: int = 0
    rows_new: int = 0
    rows_changed: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    duplicate_keys: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    skipped_fields: dict[str, str] = field(default_factory=dict)
    truncated_inputs: int = 0
    seconds: float = 0.0
    #: The source state the index now holds (recorded in the store with the run), when the run was given one.
    as_of: datetime | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class IndexProgress:
    """A progress event: ``phase`` is ``reading`` (after each page), ``embedding`` (after each batch),
    ``writing`` (before the single store write) or ``done``.

    ``rows_done`` counts the rows whose chunks are all embedded (unchanged rows count once read): it
    follows embedding, the slow step, while ``rows_read`` runs a page ahead.
    """

    product: str
    phase: Literal["reading", "embedding", "writing", "done"]
    rows_done: int
    rows_total: int | None
    chunks_embedded: int
    rows_read: int = 0


ProgressCallback = Callable[[IndexProgress], None]


def field_hash(text: str, chunking: Chunking, context: str | None = None) -> str:
    """The hash a field's chunks are stored with: its text, the chunk settings that split it and the
    context that heads each chunk (none: the hash of earlier versions, so their chunks stay valid)."""
    head = f"context:{context}\n" if context else ""
    return content_hash(f"chunk:{chunking.size}:{chunking.overlap}\n{head}{text}")


@dataclass
class _StoredField:
    field_hash: str
    ids: set[str] = field(default_factory=set)


class IndexRun:
    """Accumulates one run; see the module docstring. Not reusable after :meth:`finish`."""

    def __init__(
        self,
        product: str,
        store: SearchStore,
        embedder: Embedder,
        *,
        chunking: Chunking,
        stored: Sequence[Any],
        rebuild: bool = False,
        rows_total: int | None = None,
        progress: ProgressCallback | None = None,
        as_of: datetime | None = None,
    ) -> None:
        self.product = product
        self.as_of = as_of
        self.store = store
        self.embedder = embedder
        self.chunking = chunking
        self.report = IndexReport(product=product)
        self.rows_total = rows_total
        self._progress = progress
        self._started = time.perf_counter()
        self._truncated_before = embedder.truncated
        self._stored: dict[str, dict[str, _StoredField]] = {}
        for item in stored:  # IndexedChunk
            prefix, name, _number = split_chunk_id(item.id)
            fields = self._stored.setdefault(prefix, {})
            entry = fields.setdefault(name, _StoredField(item.field_hash))
            if rebuild:
                entry.field_hash = ""
            entry.ids.add(item.id)
        self._seen: set[str] = set()
        self._pending: list[Chunk] = []
        self._rows_ready = 0  # rows read with nothing left to embed
        self._row_ends: list[int] = []  # where each row with chunks to embed ends in _pending
        self._upserts: list[Chunk] = []
        self._vectors: list[Vectors] = []
        self._deletes: list[str] = []

    def add(self, key: dict[str, Any], texts: dict[str, str | None], *, context: str | None = None) -> None:
        """Feed one record; texts of changed fields are chunked now and embedded by :meth:`flush`.

        ``context`` (e.g. the row's title) heads the text of every chunk, so each chunk of a long field
        says what it belongs to, for BM25, the model and the reader alike.

        Raises:
            ValueError: the chunk settings are unusable (overlap not below size).
        """
        report = self.report
        report.rows_seen += 1
        prefix = row_id(self.product, key)
        if prefix in self._seen:
            report.duplicate_keys += 1
            self._rows_ready += 1
            return
        self._seen.add(prefix)
        old = self._stored.get(prefix, {})
        changed = False
        for name, text in texts.items():
            entry = old.get(name)
            if text is None or not text.strip():
                if entry is not None:
                    self._delete(entry.ids)
                    changed = True
                continue
            digest = field_hash(text, self.chunking, context)
            if entry is not None and entry.field_hash == digest:
                continue
            changed = True
            pieces = chunk_text(text, self.chunking.size, self.chunking.overlap)
            if context:
                pieces = [f"{context}\n\n{piece}" for piece in pieces]
            chunks = [
                Chunk(product=self.product, key=key, field=name, chunk=i, text=t, content_hash=digest)
                for i, t in enumerate(pieces)
            ]
            self._pending.extend(chunks)
            if entry is not None:
                self._delete(entry.ids - {c.id for c in chunks})
        for name, entry in old.items():
            if name not in texts:
                self._delete(entry.ids)
                changed = True
        if len(self._pending) > (self._row_ends[-1] if self._row_ends else 0):
            self._row_ends.append(len(self._pending))
        else:
            self._rows_ready += 1
        if not changed:
            report.rows_unchanged += 1
        elif old:
            report.rows_changed += 1
        else:
            report.rows_new += 1

    async def flush(self) -> None:
        """Embed the chunks fed so far (in a worker thread, batch by batch).

        Raises:
            EmbeddingError: the model fails; nothing has been written.
        """
        pending, self._pending = self._pending, []
        row_ends, self._row_ends = self._row_ends, []
        ended = 0
        for start in range(0, len(pending), EMBED_BATCH):
            batch = pending[start : start + EMBED_BATCH]
            texts = [c.text for c in batch]
            vectors = await anyio.to_thread.run_sync(self.embedder.embed_many, texts)
            self._upserts.extend(batch)
            self._vectors.append(vectors)
            self.report.chunks_embedded += len(batch)
            while ended < len(row_ends) and row_ends[ended] <= start + len(batch):
                ended += 1
            self.emit("embedding", embedded_rows=ended)
        self._rows_ready += len(row_ends)

    async def finish(self) -> IndexReport:
        """Embed what is left, delete what was not fed, and write everything with one ``store.apply``.

        Raises:
            EmbeddingError: the model fails; nothing has been written.
            ConnectorError: the store write fails; the store keeps the previous index.
            InvalidRequestError: the store holds this product with another model or dimensions.
        """
        await self.flush()
        for prefix, fields in self._stored.items():
            if prefix not in self._seen:
                self.report.rows_deleted += 1
                for entry in fields.values():
                    self._delete(entry.ids)
        self.report.truncated_inputs = self.embedder.truncated - self._truncated_before
        if self._upserts or self._deletes or (self.as_of is not None and self._stored):
            self.emit("writing")
            if self._vectors:
                vectors = np.concatenate(self._vectors).astype(np.float32, copy=False)
            else:
                vectors = np.empty((0, getattr(self.embedder, "dimensions", 0) or 0), dtype=np.float32)
            await self.store.apply(
                self.product, self._upserts, vectors, self._deletes, model_id=self.embedder.model_id, as_of=self.as_of
            )
            self.report.as_of = self.as_of
        self.report.chunks_deleted = len(self._deletes)
        self.report.seconds = time.perf_counter() - self._started
        self.emit("done")
        return self.report

    def emit(self, phase: Literal["reading", "embedding", "writing", "done"], *, embedded_rows: int = 0) -> None:
        """Tell the progress callback where the run is (``embedded_rows``: rows of the batch being flushed)."""
        if self._progress is not None:
            done = self._rows_ready + embedded_rows
            report = self.report
            event = IndexProgress(
                self.product, phase, done, self.rows_total, report.chunks_embedded, rows_read=report.rows_seen
            )
            self._progress(event)

    def _delete(self, ids: set[str]) -> None:
        self._deletes.extend(sorted(ids))
