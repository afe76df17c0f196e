"""The in-memory BM25 index ranks exactly as FTS5's ``bm25()``: same rows, same order, same doubles."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from catalog.errors import InvalidRequestError
from connectors._bm25_index import QueryTokenizer, build_index
from connectors.search_base import Chunk, ChunkHit
from connectors.search_embedded import _SCHEMA, TOKENIZE, EmbeddedSearchStore, fts5_query, query_words
from embeddings.base import content_hash
from embeddings.chunking import chunk_text

SCIFACT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "scifact"
TOKENIZER = QueryTokenizer(TOKENIZE)


def fts5_ranking(
    conn: sqlite3.Connection, text: str, k: int, products: list[str] | None = None
) -> list[tuple[int, float]]:
    """FTS5's own top ``k`` as ``(rowid, -bm25)``, ordered as the store orders it (bm25, then rowid)."""
    where = "" if products is None else f" AND c.product IN ({','.join('?' * len(products))})"
    sql = (
        "SELECT c.rowid, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid"
        f" WHERE chunks_fts MATCH ?{where} ORDER BY bm25(chunks_fts), c.rowid LIMIT ?"
    )
    return [(r, s) for r, s in conn.execute(sql, [fts5_query(text), *(products or []), k])]


def index_terms(text: str) -> list[str] | None:
    """The query's terms as the index takes them; None when a word is a phrase to FTS5."""
    tokens = TOKENIZER.tokens(query_words(text))
    return [t[0] for t in tokens] if all(len(t) == 1 for t in tokens) else None


# -- real data: SciFact abstracts and claims -------------------------------------------------------


@pytest.fixture(scope="module")
def scifact_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A store file of ~4k SciFact chunks in two products, and the SciFact train claims."""
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact is not at {SCIFACT} (BEIR layout: corpus.jsonl, queries-train.jsonl)")
    chunks: dict[str, list[Chunk]] = {"sci.even": [], "sci.odd": []}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as lines:
        for n, line in zip(range(1200), lines, strict=False):
            doc = json.loads(line)
            product = "sci.even" if n % 2 == 0 else "sci.odd"
            for i, text in enumerate(chunk_text(f"{doc['title']} {doc['text']}", 512, 64)):
                key = {"id": doc["_id"]}
                chunks[product].append(Chunk(product, key, "text", i, text, content_hash(text)))
    with (SCIFACT / "queries-train.jsonl").open(encoding="utf-8") as lines:
        claims = [json.loads(line)["text"] for line in lines][:150]
    path = tmp_path_factory.mktemp("scifact") / "search.sqlite"

    async def build() -> None:
        async with EmbeddedSearchStore(path) as store:
            rng = np.random.default_rng(0)
            for product, rows in chunks.items():
                vectors = rng.normal(size=(len(rows), 8)).astype(np.float32)
                await store.apply(product, rows, vectors, [], model_id="m")

    anyio.run(build)
    yield path, claims


def test_the_index_ranks_scifact_claims_exactly_as_fts5(scifact_store: tuple[Path, list[str]]) -> None:
    path, claims = scifact_store
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        index = build_index(conn, 0)
        compared = 0
        for claim in claims:
            terms = index_terms(claim)
            if terms is None:
                continue
            for k, products in ((10, None), (100, None), (100, ["sci.odd"]), (7, ["sci.even", "sci.odd"])):
                assert index.top(terms, k, products) == fts5_ranking(conn, claim, k, products), (claim, k, products)
            compared += 1
    assert compared >= 140  # SciFact claims hold few words FTS5 cuts in several tokens


@pytest.mark.anyio
async def test_the_store_answers_from_the_index_with_fts5s_hits(scifact_store: tuple[Path, list[str]]) -> None:
    path, claims = scifact_store
    async with EmbeddedSearchStore(path) as store:
        await store.warm()
        assert store._bm25 is not None  # the index answers, not FTS5
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            for claim in claims[:40]:
                hits = await store.bm25(claim, k=20, products=["sci.odd"])
                assert [(h.product, h.score) for h in hits] == [
                    (conn.execute("SELECT product FROM chunks WHERE rowid = ?", (r,)).fetchone()[0], s)
                    for r, s in fts5_ranking(conn, claim, 20, ["sci.odd"])
                ]
                assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


# -- random corpora ----------------------------------------------------------------------------------

# Stems (run/running/runs), diacritics (café/cafe), case, digits, stop words, and words FTS5 cuts in two.
VOCABULARY = [
    "run", "running", "runs", "runner", "café", "cafe", "Naïve", "naive", "data", "database", "cell",
    "cells", "x1", "42", "the", "of", "über", "Uber", "protein", "proteins", "foo_bar", "a-b",
]  # fmt: skip
words = st.lists(st.sampled_from(VOCABULARY), max_size=14)


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(st.tuples(st.sampled_from(["p.a", "p.b", "p.c"]), words), max_size=40),
    query=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=6),
    k=st.integers(1, 25),
    products=st.none() | st.lists(st.sampled_from(["p.a", "p.b", "p.c"]), min_size=1, max_size=3, unique=True),
    deleted=st.sets(st.integers(0, 39), max_size=8),
)
def test_the_index_ranks_random_corpora_exactly_as_fts5(
    docs: list[tuple[str, list[str]]], query: list[str], k: int, products: list[str] | None, deleted: set[int]
) -> None:
    text = " ".join(query)
    terms = index_terms(text)
    assume(terms is not None and query_words(text))
    assert terms is not None
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        conn.executescript(_SCHEMA)
        for i, (product, body) in enumerate(docs):
            conn.execute(
                "INSERT INTO chunks (id, product, key, field, chunk, text, field_hash, vector)"
                " VALUES (?, ?, '{}', 'f', 0, ?, '', x'')",
                (str(i), product, " ".join(body)),
            )
        conn.executemany("DELETE FROM chunks WHERE id = ?", [(str(i),) for i in deleted])  # FTS5 'delete's
        conn.execute("BEGIN")
        index = build_index(conn, 0)
        assert index.top(terms, k, products) == fts5_ranking(conn, text, k, products)


# -- kept in step with writes ------------------------------------------------------------------------


def chunk(key: int, text: str) -> Chunk:
    return Chunk(product="p.q", key={"id": key}, field="notes", chunk=0, text=text, content_hash=content_hash(text))


def texts(hits: list[ChunkHit]) -> list[str]:
    return [h.text for h in hits]


@pytest.mark.anyio
async def test_a_write_is_found_at_once_and_a_failed_run_keeps_the_index(tmp_path: Path) -> None:
    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        one = np.ones((1, 4), dtype=np.float32)
        await store.apply("p.q", [chunk(1, "kettle descaled"), chunk(2, "tea")], np.ones((2, 4)), [], model_id="m")
        await store.warm()
        built = store._bm25
        assert built is not None
        await store.apply("p.q", [chunk(3, "kettle kettle kettle")], one, [], model_id="m")
        # The index is of the previous generation: FTS5 answers until it is rebuilt, nothing is missed.
        assert texts(await store.bm25("kettle", k=5)) == ["kettle kettle kettle", "kettle descaled"]
        await store.warm()
        rebuilt = store._bm25
        assert rebuilt is not None and rebuilt.generation > built.generation
        assert texts(await store.bm25("kettle", k=5)) == ["kettle kettle kettle", "kettle descaled"]

        with pytest.raises(InvalidRequestError, match="re-index needed"):
            await store.apply("p.q", [chunk(4, "kettle")], np.ones((1, 8)), [], model_id="other")
        assert store._bm25 is rebuilt  # nothing was written: the index stays the store's
        assert texts(await store.bm25("kettle", k=5)) == ["kettle kettle kettle", "kettle descaled"]

        await store.apply("p.q", [], np.zeros((0, 4)), [chunk(3, "").id], model_id="m")
        assert texts(await store.bm25("kettle", k=5)) == ["kettle descaled"]
        await store.drop("p.q")
        assert await store.bm25("kettle", k=5) == []


@pytest.mark.anyio
async def test_a_word_fts5_cuts_in_two_is_ranked_by_fts5_as_a_phrase(tmp_path: Path) -> None:
    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        rows = [chunk(1, "foo bar"), chunk(2, "bar foo"), chunk(3, "foo_bar again foo")]
        await store.apply("p.q", rows, np.ones((3, 4)), [], model_id="m")
        await store.warm()
        assert texts(await store.bm25("foo_bar", k=5)) == ["foo bar", "foo_bar again foo"]


def test_the_query_tokenizer_is_fts5s() -> None:
    assert TOKENIZER.tokens(["running", "café", "foo_bar", "_", "Über"]) == [
        ("run",),
        ("cafe",),
        ("foo", "bar"),
        (),
        ("uber",),
    ]


async def built(store: EmbeddedSearchStore) -> None:
    """Until the background build has finished (a few ms here; at most 10 s)."""
    for _ in range(1000):
        if not store._bm25_building:
            return
        await anyio.sleep(0.01)
    raise AssertionError("the BM25 index was not built in 10 s")


@pytest.mark.anyio
async def test_the_first_query_answers_from_fts5_and_starts_the_build(tmp_path: Path) -> None:
    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        rows = [chunk(1, "kettle descaled"), chunk(2, "kettle"), chunk(3, "tea")]
        await store.apply("p.q", rows, np.ones((3, 4)), [], model_id="m")
        first = await store.bm25("kettle tea", k=5)
        await built(store)
        assert store._bm25 is not None
        assert await store.bm25("kettle tea", k=5) == first


@pytest.mark.anyio
async def test_a_failed_build_leaves_fts5_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: sqlite3.Connection, generation: int) -> None:
        raise ValueError("fts5vocab's instance and row tables disagree")

    monkeypatch.setattr("connectors.search_embedded.build_index", broken)
    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        await store.apply("p.q", [chunk(1, "kettle"), chunk(2, "tea")], np.ones((2, 4)), [], model_id="m")
        assert texts(await store.bm25("kettle", k=5)) == ["kettle"]
        await built(store)
        assert store._bm25 is None
        assert texts(await store.bm25("kettle", k=5)) == ["kettle"]  # FTS5, and no retry for a while
        assert not store._bm25_building
        with pytest.raises(ValueError, match="disagree"):
            await store.warm()
