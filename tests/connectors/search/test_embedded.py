"""What only the embedded store promises: WAL readers beside a writer, and FTS5 syntax never leaking."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.errors import ConnectorUnavailableError
from connectors.search_base import Chunk
from connectors.search_embedded import EmbeddedSearchStore, fts5_query
from embeddings.base import content_hash
from tests.fakes import FakeEmbedder

EMBEDDER = FakeEmbedder(dimensions=16)


def chunk(key: int, text: str) -> Chunk:
    return Chunk(product="p.q", key={"id": key}, field="notes", chunk=0, text=text, content_hash=content_hash(text))


@pytest.mark.anyio
async def test_readers_keep_reading_the_last_index_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    path = tmp_path / "search.sqlite"
    store = EmbeddedSearchStore(path)
    await store.apply("p.q", [chunk(1, "refund asked")], EMBEDDER.embed_many(["refund asked"]), [], model_id="m")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM chunks")
        writer.execute("UPDATE meta SET value = '99' WHERE key = 'generation'")
        writer.execute("UPDATE products SET generation = 99")

        hits = await store.bm25("refund", k=5)
        nearest = await store.knn(EMBEDDER.embed("refund"), k=5)

        writer.execute("ROLLBACK")
    assert [h.text for h in hits] == [h.text for h in nearest] == ["refund asked"]
    await store.aclose()


def test_every_word_of_the_query_is_quoted_and_operators_are_words() -> None:
    assert fts5_query('refund NEAR(x "y") AND z*') == '"refund" OR "near" OR "x" OR "y" OR "z"'
    assert fts5_query("the kettle of the tea") == '"kettle" OR "tea"'  # English stop words, as in Elasticsearch
    assert fts5_query("  * ( ) : ^ \" '") == ""
    assert fts5_query("Refund refund REFUND") == '"refund"'


@given(st.text(max_size=200))
def test_fts5_accepts_the_query_made_of_any_text(text: str) -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE VIRTUAL TABLE t USING fts5 (x, tokenize='porter unicode61 remove_diacritics 2')")
        conn.execute("INSERT INTO t VALUES ('refund the parcel')")
        match = fts5_query(text)
        if match:
            conn.execute("SELECT bm25(t) FROM t WHERE t MATCH ?", (match,)).fetchall()


@pytest.mark.anyio
async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = EmbeddedSearchStore(tmp_path / "s.sqlite")
    await store.aclose()
    with pytest.raises(ConnectorUnavailableError, match="closed"):
        await store.bm25("refund", k=1)


@pytest.mark.anyio
async def test_a_file_that_is_no_database_is_reported_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not sqlite at all" * 100)
    store = EmbeddedSearchStore(path)
    with pytest.raises(ConnectorUnavailableError, match="not a database"):
        await store.bm25("refund", k=1)
    await store.aclose()
