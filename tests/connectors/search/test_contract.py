"""The search-store contract: the same behaviour asked of the embedded store and of Elasticsearch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import numpy as np
import pytest

from catalog.errors import ConnectorError, InvalidRequestError
from connectors.search_base import Chunk, ChunkHit
from embeddings.base import content_hash
from tests.connectors.search.conftest import POISON, SearchStoreCase
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.anyio

EMBEDDER = FakeEmbedder(dimensions=64)
ORDERS = "sales.orders"
TICKETS = "support.tickets"
NOTES = {
    1: "Parcel arrived damaged, the customer asked for a refund",
    2: "Delivery was late because the courier lost the address",
    3: "Invoice sent twice; customer paid only once",
    4: "Żółta koszulka: rozmiar za mały, wymiana na większy",
    5: "Gift wrapping requested for a birthday present",
}
HOSTILE = [
    "",
    "   ",
    '"',
    '"unterminated phrase',
    "*",
    "refund*",
    "AND",
    "OR OR NOT",
    "refund AND",
    "NEAR(",
    "NEAR(refund courier, 2)",
    "text:refund",
    "{text}: refund",
    "^refund",
    "(refund OR",
    "'; DROP TABLE chunks; --",
    "\x00\x01",
    "🦊 日本語 Łódź",
    "a" * 5000,
    "- + ! ( ) [ ] { } ~ : \\ / < > = &&  ||",
]


def chunk(product: str, key: int, text: str, *, number: int = 0) -> Chunk:
    return Chunk(
        product=product, key={"id": key}, field="notes", chunk=number, text=text, content_hash=content_hash(text)
    )


async def index(store: SearchStoreCase, product: str, chunks: Sequence[Chunk], deletes: Sequence[str] = ()) -> None:
    vectors = EMBEDDER.embed_many([c.text for c in chunks]) if chunks else np.zeros((0, EMBEDDER.dimensions), "f4")
    await store.store.apply(product, chunks, vectors, deletes, model_id=EMBEDDER.model_id)


def texts(hits: list[ChunkHit]) -> list[str]:
    return [h.text for h in hits]


async def test_upserted_chunks_are_searchable_and_deleted_chunks_are_gone(search: SearchStoreCase) -> None:
    chunks = [chunk(ORDERS, k, t) for k, t in NOTES.items()]
    await index(search, ORDERS, chunks)
    assert texts(await search.store.bm25("courier", k=10)) == [NOTES[2]]

    await index(search, ORDERS, [chunk(ORDERS, 2, "Delivery on time, courier was friendly")], [chunks[0].id])

    assert texts(await search.store.bm25("courier", k=10)) == ["Delivery on time, courier was friendly"]
    assert await search.store.bm25("refund", k=10) == []
    assert len(await search.store.indexed(ORDERS)) == len(NOTES) - 1


async def test_hits_carry_the_row_key_field_chunk_text_and_ranks_from_one(search: SearchStoreCase) -> None:
    await index(
        search, ORDERS, [chunk(ORDERS, 7, "first part about refunds", number=0), chunk(ORDERS, 7, "more", number=1)]
    )

    (hit,) = await search.store.bm25("refunds", k=5)

    assert (hit.product, hit.key, hit.field, hit.chunk, hit.text, hit.rank) == (
        ORDERS,
        {"id": 7},
        "notes",
        0,
        "first part about refunds",
        1,
    )
    assert hit.score > 0


async def test_bm25_ranks_the_chunk_holding_the_query_terms_first(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, k, t) for k, t in NOTES.items()])

    hits = await search.store.bm25("customer refund", k=10)

    assert hits[0].text == NOTES[1]  # both terms; NOTES[3] holds only "customer"
    assert texts(hits) == [NOTES[1], NOTES[3]]
    assert [h.rank for h in hits] == [1, 2]
    assert hits[0].score > hits[1].score


async def test_bm25_matches_stemmed_and_accented_words(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, k, t) for k, t in NOTES.items()])

    assert texts(await search.store.bm25("refunds", k=3)) == [NOTES[1]]
    assert texts(await search.store.bm25("koszulka", k=3)) == [NOTES[4]]


async def test_knn_ranks_the_nearest_vector_first(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, k, t) for k, t in NOTES.items()])

    hits = await search.store.knn(EMBEDDER.embed("the courier lost the parcel address"), k=3)

    assert hits[0].text == NOTES[2]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    exact = await search.store.knn(EMBEDDER.embed(NOTES[5]), k=1)
    assert texts(exact) == [NOTES[5]]
    assert exact[0].score == pytest.approx(1.0, abs=1e-3)  # cosine similarity


async def test_k_caps_the_hits_of_both_queries(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, k, f"refund request number {k}") for k in range(20)])

    assert len(await search.store.bm25("refund", k=7)) == 7
    assert len(await search.store.knn(EMBEDDER.embed("refund request"), k=7)) == 7


async def test_both_queries_see_only_the_products_asked_for(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, 1, "refund for a damaged parcel")])
    await index(search, TICKETS, [chunk(TICKETS, 1, "refund for a damaged parcel, ticket")])
    vector = EMBEDDER.embed("refund damaged parcel")

    assert {h.product for h in await search.store.bm25("refund", k=10)} == {ORDERS, TICKETS}
    assert {h.product for h in await search.store.bm25("refund", k=10, products=[TICKETS])} == {TICKETS}
    assert {h.product for h in await search.store.knn(vector, k=10, products=[ORDERS])} == {ORDERS}
    assert {h.product for h in await search.store.knn(vector, k=10)} == {ORDERS, TICKETS}
    assert await search.store.bm25("refund", k=10, products=[]) == []
    assert await search.store.knn(vector, k=10, products=["no.such"]) == []


async def test_indexed_reports_every_chunk_with_its_field_hash_for_incremental_runs(search: SearchStoreCase) -> None:
    chunks = [chunk(ORDERS, 1, "part one", number=0), chunk(ORDERS, 1, "part two", number=1), chunk(ORDERS, 2, "x")]
    await index(search, ORDERS, chunks)
    await index(search, TICKETS, [chunk(TICKETS, 1, "other product")])

    found = {c.id: c.field_hash for c in await search.store.indexed(ORDERS)}

    assert found == {c.id: c.content_hash for c in chunks}
    await index(search, ORDERS, [chunk(ORDERS, 2, "x changed")])
    assert {c.id: c.field_hash for c in await search.store.indexed(ORDERS)}[chunks[2].id] == content_hash("x changed")
    assert await search.store.indexed("no.such") == []


async def test_drop_removes_every_chunk_of_the_product_only(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, 1, "refund")])
    await index(search, TICKETS, [chunk(TICKETS, 1, "refund")])

    await search.store.drop(ORDERS)

    assert await search.store.indexed(ORDERS) == []
    assert {h.product for h in await search.store.bm25("refund", k=10)} == {TICKETS}
    await search.store.drop("no.such")  # dropping nothing is fine


async def test_an_index_run_with_another_model_is_refused_until_the_product_is_dropped(
    search: SearchStoreCase,
) -> None:
    await index(search, ORDERS, [chunk(ORDERS, 1, "refund")])
    other = FakeEmbedder(dimensions=32)
    rows = [chunk(ORDERS, 2, "courier")]

    with pytest.raises(
        InvalidRequestError, match=r"indexed with model 'fake-hashed-words' \(64 dimensions\).*re-index"
    ):
        await search.store.apply(ORDERS, rows, other.embed_many(["courier"]), [], model_id="other-model")
    with pytest.raises(InvalidRequestError, match="re-index"):
        await search.store.apply(ORDERS, rows, other.embed_many(["courier"]), [], model_id=EMBEDDER.model_id)
    with pytest.raises(InvalidRequestError, match="one row per upserted chunk"):
        await search.store.apply(ORDERS, rows, EMBEDDER.embed_many(["a", "b"]), [], model_id=EMBEDDER.model_id)
    assert texts(await search.store.bm25("refund courier", k=5)) == ["refund"]

    await search.store.drop(ORDERS)
    await search.store.apply(ORDERS, rows, other.embed_many(["courier"]), [], model_id="other-model")
    assert texts(await search.store.knn(other.embed("courier"), k=5, products=[ORDERS])) == ["courier"]


@pytest.mark.parametrize("query", HOSTILE, ids=[f"q{i}" for i in range(len(HOSTILE))])
async def test_any_query_text_is_searched_as_words_and_never_errors(search: SearchStoreCase, query: str) -> None:
    await index(search, ORDERS, [chunk(ORDERS, k, t) for k, t in NOTES.items()])

    hits = await search.store.bm25(query, k=5)

    assert all(h.text in NOTES.values() for h in hits)
    if "refund" in query and "\\" not in query:
        assert NOTES[1] in texts(hits)


async def test_an_interrupted_index_run_leaves_the_previous_index_searchable(search: SearchStoreCase) -> None:
    old = [chunk(ORDERS, k, t) for k, t in NOTES.items()]
    await index(search, ORDERS, old)
    before = await search.store.indexed(ORDERS)
    changed = chunk(ORDERS, 1, "Parcel arrived intact after all")
    await search.inject_failure(ORDERS)

    with pytest.raises(ConnectorError, match="injected failure"):
        await index(search, ORDERS, [changed, chunk(ORDERS, 9, POISON)], [old[1].id])

    after = {c.id: c.field_hash for c in await search.store.indexed(ORDERS)}
    if search.atomic:
        assert await search.store.indexed(ORDERS) == before
        assert texts(await search.store.bm25("refund", k=5)) == [NOTES[1]]
        assert texts(await search.store.knn(EMBEDDER.embed(NOTES[1]), k=1)) == [NOTES[1]]
    else:  # each document at its old or its new version; deletes wait until the upserts are in
        assert set(after) == {c.id for c in before}
        assert after[changed.id] in {old[0].content_hash, changed.content_hash}
    assert texts(await search.store.bm25("courier", k=5)) == [NOTES[2]]


async def test_searches_during_an_index_run_see_the_old_or_the_new_index(search: SearchStoreCase) -> None:
    old = [chunk(ORDERS, k, f"order {k} refund pending") for k in range(300)]
    new = [chunk(ORDERS, k, f"order {k} refund paid") for k in range(300)]
    await index(search, ORDERS, old)
    reader = search.open_another()
    vector = EMBEDDER.embed("refund pending")
    answers: list[tuple[str, ...]] = []

    async def read() -> None:
        for _ in range(15):
            answers.append(tuple(sorted(texts(await reader.bm25("pending", k=1000)))))
            assert all(h.text.endswith(("pending", "paid")) for h in await reader.knn(vector, k=20))
            await anyio.sleep(0)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(read)
            group.start_soon(index, search, ORDERS, new)
        answers.append(tuple(sorted(texts(await reader.bm25("pending", k=1000)))))
    finally:
        await reader.aclose()

    old_answer = tuple(sorted(c.text for c in old))
    assert answers[-1] == ()
    if search.atomic:
        assert set(answers) <= {old_answer, ()}
    else:
        assert all(set(a) <= set(old_answer) for a in answers)


async def test_a_second_store_on_the_same_storage_sees_each_new_index_run(search: SearchStoreCase) -> None:
    await index(search, ORDERS, [chunk(ORDERS, 1, "refund requested")])
    server = search.open_another()
    try:
        vector = EMBEDDER.embed("refund granted")
        assert texts(await server.knn(vector, k=5)) == ["refund requested"]  # now cached by the server

        await index(search, ORDERS, [chunk(ORDERS, 2, "refund granted")])
        assert texts(await server.knn(vector, k=1)) == ["refund granted"]
        await search.store.drop(ORDERS)
        assert await server.knn(vector, k=5) == []
    finally:
        await server.aclose()


async def test_an_index_run_records_the_source_state_it_read_and_a_run_without_changes_moves_it_on(
    search: SearchStoreCase,
) -> None:
    first, later = datetime(2026, 11, 1, 8, tzinfo=UTC), datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    before = datetime.now(UTC)
    chunks = [chunk(ORDERS, k, t) for k, t in NOTES.items()]
    await search.store.apply(
        ORDERS, chunks, EMBEDDER.embed_many([c.text for c in chunks]), [], model_id=EMBEDDER.model_id, as_of=first
    )
    await index(search, TICKETS, [chunk(TICKETS, 1, "printer jammed")])  # a run given no as_of records none

    states = await search.store.index_states([ORDERS, TICKETS, "never.indexed"])

    assert set(states) == {ORDERS, TICKETS}
    assert (states[ORDERS].as_of, states[ORDERS].chunks) == (first, len(NOTES))
    assert states[ORDERS].indexed_at is not None and states[ORDERS].indexed_at >= before
    assert (states[TICKETS].as_of, states[TICKETS].chunks) == (None, 1)

    empty = np.zeros((0, EMBEDDER.dimensions), "f4")
    await search.store.apply(ORDERS, [], empty, [], model_id=EMBEDDER.model_id, as_of=later)  # nothing changed

    (state,) = (await search.store.index_states([ORDERS])).values()
    assert (state.as_of, state.chunks) == (later, len(NOTES))
    assert texts(await search.store.bm25("courier", k=10)) == [NOTES[2]]  # the index itself is untouched
