"""The embedded store keeps each product's index state in its ``products`` table: files of schema
version 1 gain it when first opened, and a run that changes nothing leaves the caches' generation."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from connectors.search_base import Chunk
from connectors.search_embedded import TOKENIZE, EmbeddedSearchStore
from embeddings.base import content_hash
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.anyio

EMBEDDER = FakeEmbedder(dimensions=16)
# The layout this store wrote before index states were recorded (schema version 1).
VERSION_1 = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    product TEXT PRIMARY KEY, model_id TEXT NOT NULL, dimensions INTEGER NOT NULL, generation INTEGER NOT NULL
);
CREATE TABLE chunks (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, product TEXT NOT NULL, key TEXT NOT NULL,
    field TEXT NOT NULL, chunk INTEGER NOT NULL, text TEXT NOT NULL, field_hash TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX chunks_product ON chunks (product);
CREATE VIRTUAL TABLE chunks_fts USING fts5 (text, content='chunks', content_rowid='rowid', tokenize='{TOKENIZE}');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
INSERT INTO meta VALUES ('schema_version', '1'), ('generation', '1');
"""


def chunk(key: int, text: str) -> Chunk:
    return Chunk(product="p.q", key={"id": key}, field="notes", chunk=0, text=text, content_hash=content_hash(text))


def version_1_file(path: Path) -> None:
    refund = chunk(1, "refund asked for a damaged parcel")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(VERSION_1)
        conn.execute("INSERT INTO products VALUES ('p.q', ?, 16, 1)", (EMBEDDER.model_id,))
        conn.execute(
            "INSERT INTO chunks (id, product, key, field, chunk, text, field_hash, vector)"
            " VALUES (?, 'p.q', '{\"id\": 1}', 'notes', 0, ?, ?, ?)",
            (refund.id, refund.text, refund.content_hash, EMBEDDER.embed(refund.text).tobytes()),
        )


async def test_a_version_1_file_is_upgraded_in_place_and_keeps_serving_its_index(tmp_path: Path) -> None:
    path = tmp_path / "search.sqlite"
    version_1_file(path)
    store = EmbeddedSearchStore(path)
    try:
        (state,) = (await store.index_states(["p.q"])).values()
        assert (state.as_of, state.indexed_at, state.chunks) == (None, None, 1)  # unknown until the next run
        assert [h.key for h in await store.bm25("damaged refund", k=5)] == [{"id": 1}]

        as_of = datetime(2026, 11, 30, 12, tzinfo=UTC)
        empty = np.zeros((0, 16), "f4")
        await store.apply("p.q", [], empty, [], model_id=EMBEDDER.model_id, as_of=as_of)
        assert (await store.index_states(["p.q"]))["p.q"].as_of == as_of
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(products)")]
    assert columns[-2:] == ["as_of", "indexed_at"]

    reopened = EmbeddedSearchStore(path)  # an upgraded file opens as any version 2 file
    try:
        assert (await reopened.index_states(["p.q"]))["p.q"].as_of == as_of
    finally:
        await reopened.aclose()


async def test_a_run_that_changes_nothing_records_its_state_without_a_new_generation(tmp_path: Path) -> None:
    path = tmp_path / "search.sqlite"
    store = EmbeddedSearchStore(path)
    try:
        first = chunk(1, "refund asked")
        await store.apply("p.q", [first], EMBEDDER.embed_many([first.text]), [], model_id="m", as_of=datetime.now(UTC))
        with contextlib.closing(sqlite3.connect(path)) as conn:
            before = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        later = datetime(2030, 1, 1, tzinfo=UTC)
        await store.apply("p.q", [], np.zeros((0, 16), "f4"), [], model_id="m", as_of=later)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            after = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        assert before == after
        assert (await store.index_states(["p.q"]))["p.q"].as_of == later
    finally:
        await store.aclose()
