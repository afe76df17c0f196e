"""What only the embedded store promises: WAL readers beside a writer, and FTS5 syntax never leaking."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
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


def _reference_bm25(path: Path, query: str, k: int, products: list[str] | None) -> list[tuple[str, int, float]]:
    """FTS5's ranking filtered by product inside one query: what the store's BM25 leg must answer."""
    where = "" if products is None else f" AND c.product IN ({','.join('?' * len(products))})"
    sql = (
        "SELECT c.product, c.rowid, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid"
        f" WHERE chunks_fts MATCH ?{where} ORDER BY bm25(chunks_fts), c.rowid LIMIT ?"
    )
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, [fts5_query(query), *(products or []), k]).fetchall()


@pytest.mark.anyio
@pytest.mark.parametrize("products", [None, ["big.docs"], ["small.docs"], ["big.docs", "small.docs"], ["none.such"]])
async def test_bm25_ranks_as_fts5_filtered_by_product_whatever_share_of_the_store_the_products_hold(
    tmp_path: Path, products: list[str] | None
) -> None:
    # Few words, so scores tie and the rowid decides; small.docs holds 2% of the chunks, so the best
    # chunks of the whole store are rarely its own and the leg must rank within the product.
    path = tmp_path / "search.sqlite"
    store = EmbeddedSearchStore(path)
    words = "refund parcel courier invoice damaged late gift wrapping size exchange".split()
    rng = np.random.default_rng(3)
    for product, count in (("big.docs", 490), ("small.docs", 10)):
        texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(count)]
        chunks = [
            Chunk(product=product, key={"id": i}, field="notes", chunk=0, text=t, content_hash=content_hash(t))
            for i, t in enumerate(texts)
        ]
        await store.apply(product, chunks, EMBEDDER.embed_many(texts), [], model_id="m")
    rowids = {(p, i): r for r, p, i in sqlite3.connect(path).execute("SELECT rowid, product, key ->> 'id' FROM chunks")}

    for query, k in [("refund", 10), ("parcel courier", 25), ("gift OR wrapping size", 3), ("exchange", 400)]:
        hits = await store.bm25(query, k=k, products=products)

        expected = _reference_bm25(path, query, k, products)
        assert [(h.product, rowids[(h.product, h.key["id"])]) for h in hits] == [(p, r) for p, r, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, _, s in expected])
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    await store.aclose()
