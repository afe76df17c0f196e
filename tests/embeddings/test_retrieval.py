"""Hybrid retrieval: reciprocal rank fusion, the three modes, reserved products, catalog search."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from catalog.compiler import Compiler
from catalog.contract import ProductContract
from catalog.errors import ConnectorError
from connectors import ConnectionConfig, connector_for
from connectors.search_base import Chunk, ChunkHit, SearchStore
from connectors.search_embedded import EmbeddedSearchStore
from embeddings.base import Embedder, content_hash
from embeddings.index import index_product
from embeddings.llamacpp import LlamaCppEmbedder
from embeddings.retrieval import (
    CATALOG_PRODUCT,
    RetrievedChunk,
    catalog_document,
    catalog_search,
    hybrid_search,
    index_catalog,
    reciprocal_rank_fusion,
)
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.anyio

DOCS = {
    "a": "Espresso machines need regular descaling with citric acid.",
    "b": "Green tea tastes bitter when brewed with boiling water.",
    "c": "Refunds reach the original payment method within fourteen days.",
    "d": "The Rotterdam warehouse ships camping stoves and flasks.",
    "e": "Descaling kettles removes limescale; citric acid works well.",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SearchStore]:
    async with EmbeddedSearchStore(tmp_path / "search.db") as search_store:
        yield search_store


async def _load(store: SearchStore, product: str, docs: dict[str, str], embedder: FakeEmbedder) -> None:
    chunks = [
        Chunk(product=product, key={"id": k}, field="text", chunk=0, text=t, content_hash=content_hash(t))
        for k, t in docs.items()
    ]
    vectors = embedder.embed_many([c.text for c in chunks])
    await store.apply(product, chunks, vectors, [], model_id=embedder.model_id)


def _hit(name: str, rank: int, product: str = "p.docs") -> ChunkHit:
    return ChunkHit(product=product, key={"id": name}, field="text", chunk=0, text=name, score=0.0, rank=rank)


def test_rrf_sums_reciprocal_ranks_with_k_60() -> None:
    bm25 = [_hit("A", 1), _hit("B", 2), _hit("C", 3)]
    dense = [_hit("B", 1), _hit("D", 2), _hit("A", 3)]
    fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense})
    assert [r.key["id"] for r in fused] == ["B", "A", "D", "C"]
    scores = {r.key["id"]: r.score for r in fused}
    assert scores["B"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["A"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["D"] == pytest.approx(1 / 62)
    assert scores["C"] == pytest.approx(1 / 63)
    assert (fused[0].bm25_rank, fused[0].dense_rank) == (2, 1)
    assert (fused[3].bm25_rank, fused[3].dense_rank) == (3, None)


def test_rrf_with_a_limit_returns_the_best_of_the_whole_fusion() -> None:
    bm25 = [_hit("A", 1), _hit("B", 2), _hit("C", 3)]
    dense = [_hit("B", 1), _hit("D", 2), _hit("A", 3)]
    whole = reciprocal_rank_fusion({"bm25": bm25, "dense": dense})
    for limit in range(6):
        assert reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, limit=limit) == whole[:limit]


def test_rrf_breaks_ties_by_best_single_rank_then_first_appearance() -> None:
    fused = reciprocal_rank_fusion({"bm25": [_hit("A", 1), _hit("B", 2)], "dense": [_hit("B", 1), _hit("A", 2)]})
    assert [r.key["id"] for r in fused] == ["A", "B"]
    assert fused[0].score == fused[1].score


def test_rrf_keeps_chunks_of_different_products_apart() -> None:
    fused = reciprocal_rank_fusion({"bm25": [_hit("A", 1, "p.one")], "dense": [_hit("A", 1, "p.two")]})
    assert sorted(r.product for r in fused) == ["p.one", "p.two"]


def test_a_hit_cites_product_key_field_and_chunk() -> None:
    hit = RetrievedChunk("docs.handbook", {"filename": "a.md"}, "content", 2, "text", 0.1)
    assert hit.citation == "docs.handbook[filename=a.md].content#2"


async def test_modes_return_the_store_rankings_and_their_fusion(store: SearchStore) -> None:
    embedder = FakeEmbedder()
    await _load(store, "p.docs", DOCS, embedder)
    query = "descaling with citric acid"
    bm25 = await hybrid_search(store, embedder, query, k=3, mode="bm25")
    dense = await hybrid_search(store, embedder, query, k=3, mode="dense")
    hybrid = await hybrid_search(store, embedder, query, k=3)
    raw_bm25 = await store.bm25(query, k=100)
    raw_dense = await store.knn(embedder.embed(query), k=100)
    assert [h.key for h in bm25] == [h.key for h in raw_bm25[:3]]
    assert [h.score for h in dense] == pytest.approx([h.score for h in raw_dense[:3]])
    expected = reciprocal_rank_fusion({"bm25": raw_bm25, "dense": raw_dense})[:3]
    assert [(h.key, h.score) for h in hybrid] == [(h.key, h.score) for h in expected]
    assert {h.key["id"] for h in hybrid[:2]} == {"a", "e"}


async def test_search_is_limited_to_the_products_asked_for(store: SearchStore) -> None:
    embedder = FakeEmbedder()
    await _load(store, "p.docs", DOCS, embedder)
    await _load(store, "p.other", {"x": "citric acid descaling guide"}, embedder)
    hits = await hybrid_search(store, embedder, "citric acid descaling", k=10, products=["p.other"])
    assert {h.product for h in hits} == {"p.other"}
    assert await hybrid_search(store, embedder, "citric acid", products=[]) == []
    assert await hybrid_search(store, embedder, "   ") == []


async def test_reserved_products_stay_out_of_an_open_search(store: SearchStore) -> None:
    embedder = FakeEmbedder()
    await _load(store, "p.docs", DOCS, embedder)
    await _load(store, CATALOG_PRODUCT, {"p.docs": "descaling citric acid descaling"}, embedder)
    everywhere = await hybrid_search(store, embedder, "descaling citric acid", k=10)
    assert everywhere and CATALOG_PRODUCT not in {h.product for h in everywhere}
    named = await hybrid_search(store, embedder, "descaling citric acid", k=10, products=[CATALOG_PRODUCT])
    assert {h.product for h in named} == {CATALOG_PRODUCT}


@pytest.mark.parametrize("bad", [{"k": 0}, {"candidates": 0}, {"mode": "sparse"}])
async def test_bad_arguments_are_refused(store: SearchStore, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await hybrid_search(store, FakeEmbedder(), "tea", **bad)


class _BrokenLexicalStore(EmbeddedSearchStore):
    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[ChunkHit]:
        raise ConnectorError("fts index unavailable")


async def test_a_failing_store_raises_its_own_error(tmp_path: Path) -> None:
    async with _BrokenLexicalStore(tmp_path / "broken.db") as broken:
        with pytest.raises(ConnectorError, match="fts index unavailable"):
            await hybrid_search(broken, FakeEmbedder(), "tea")


def _product(name: str, title: str, description: str, columns: list[tuple[str, str]], **extra: Any) -> ProductContract:
    return ProductContract.model_validate(
        {
            "name": name,
            "version": "1.0.0",
            "title": title,
            "description": description,
            "owner": {"team": "data"},
            "source": {"connection": "shop", "table": name.split(".")[1]},
            "columns": [{"name": n, "type": "string", "description": d} for n, d in columns],
            **extra,
        }
    )


CATALOG = [
    _product(
        "shop.customers",
        "Customers",
        "One row per registered customer.",
        [("email", "Login and contact e-mail address"), ("country", "Country of residence")],
        tags=["crm"],
    ),
    _product(
        "shop.orders",
        "Orders",
        "One row per order as booked.",
        [("status", "Order status"), ("region", "Sales region")],
    ),
    _product("ops.shipments", "Shipments", "Parcels leaving the warehouse.", [("carrier", "Parcel carrier")]),
]


def test_the_catalog_document_names_columns_and_tags() -> None:
    text = catalog_document(CATALOG[0])
    assert text.startswith("shop.customers: Customers\n")
    assert "email: Login and contact e-mail address" in text and "Tags: crm" in text


async def test_catalog_search_ranks_products_by_their_description(store: SearchStore) -> None:
    embedder = FakeEmbedder()
    report = await index_catalog(CATALOG, store, embedder)
    assert report.rows_new == 3
    ranked = await catalog_search(store, embedder, "customer contact e-mail address", k=2)
    assert ranked[0][0] == "shop.customers"
    assert len(ranked) <= 2
    names = [name for name, _ in await catalog_search(store, embedder, "warehouse parcel carrier", k=3, mode="bm25")]
    assert names[0] == "ops.shipments"


async def test_catalog_index_is_incremental_and_forgets_removed_products(store: SearchStore) -> None:
    await index_catalog(CATALOG, store, FakeEmbedder())
    embedder = FakeEmbedder()
    again = await index_catalog(CATALOG, store, embedder)
    assert embedder.batches == [] and again.rows_unchanged == 3
    gone = await index_catalog(CATALOG[:2], store, embedder)
    assert gone.rows_deleted == 1
    assert all("ops.shipments" not in c.id for c in await store.indexed(CATALOG_PRODUCT))


KB = {
    1: "Espresso machines need regular descaling: run citric acid through the boiler once a month.",
    2: "Green tea turns bitter when brewed with boiling water; use water at eighty degrees.",
    3: "Refunds reach the original payment method within fourteen days of the return arriving.",
    4: "Parcels leave the Rotterdam warehouse every weekday before five in the afternoon.",
    5: "Customers can change their delivery address until the order has been shipped.",
}


@pytest.fixture
async def kb_store(
    tmp_path: Path, store: SearchStore, embedding_model_path: Path
) -> AsyncIterator[tuple[SearchStore, Embedder]]:
    """Five support notes in SQLite, indexed through the real connector with the real GGUF model."""
    path = tmp_path / "kb.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", list(KB.items()))
    conn.close()
    contract = ProductContract.model_validate(
        {
            "name": "support.notes",
            "version": "1.0.0",
            "title": "Support notes",
            "description": "Knowledge-base notes.",
            "owner": {"team": "support"},
            "source": {"connection": "kb", "table": "notes"},
            "primary_key": ["note_id"],
            "columns": [
                {"name": "note_id", "type": "integer", "description": "Note number"},
                {"name": "body", "type": "string", "description": "Note text"},
            ],
            "retrieval": {"text_fields": ["body"]},
        }
    )
    embedder = LlamaCppEmbedder(embedding_model_path)
    try:
        async with connector_for(ConnectionConfig(name="kb", kind="sqlite", path=str(path))) as sqlite_kb:
            report = await index_product(
                contract, sqlite_kb, store, embedder, compiler=Compiler(sqlite_kb.dialect, "s")
            )
        assert report.rows_new == 5 and report.chunks_embedded == 5
        yield store, embedder
    finally:
        embedder.close()


@pytest.mark.parametrize(
    ("question", "note"),
    [
        ("keeping a coffee machine free of calcium deposits", 1),
        ("will I get my money back?", 3),  # no word in common with any note: BM25 finds nothing
        ("can I ship my order to a different house", 5),
    ],
)
async def test_the_real_model_finds_the_row_of_a_paraphrased_question(
    kb_store: tuple[SearchStore, Embedder], question: str, note: int
) -> None:
    store, embedder = kb_store
    for mode in ("dense", "hybrid"):
        hits = await hybrid_search(store, embedder, question, k=3, products=["support.notes"], mode=mode)
        assert hits[0].key == {"note_id": note}, (mode, [h.key for h in hits])


async def test_stop_words_do_not_outweigh_meaning_in_a_tiny_product(kb_store: tuple[SearchStore, Embedder]) -> None:
    store, embedder = kb_store
    question = "what temperature should the kettle be for a cup of sencha"
    dense = await hybrid_search(store, embedder, question, k=1, products=["support.notes"], mode="dense")
    assert dense[0].key == {"note_id": 2}
    hybrid = await hybrid_search(store, embedder, question, k=1, products=["support.notes"])
    assert hybrid[0].key == {"note_id": 2}
