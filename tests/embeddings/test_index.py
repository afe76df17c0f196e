"""The index flow on a real SQLite product through the SQLite connector: incremental, atomic, masking-aware."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from catalog.compiler import Compiler
from catalog.contract import ProductContract
from catalog.errors import ConnectorError, EmbeddingError, InvalidRequestError
from connectors import ConnectionConfig, connector_for
from connectors.base import Connector
from connectors.search_base import Chunk, ChunkHit, IndexedChunk, SearchStore
from connectors.search_embedded import EmbeddedSearchStore
from embeddings.base import Vectors
from embeddings.chunking import chunk_text
from embeddings.index import IndexProgress, IndexReport, index_product
from embeddings.retrieval import hybrid_search
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.anyio

SALT = "test-salt"
BODIES = {
    1: "The espresso machine needs descaling every month. Use citric acid, never vinegar, and rinse twice.",
    2: "Green tea should steep at eighty degrees for two minutes; boiling water makes it bitter.",
    3: "Our warehouse in Rotterdam ships outdoor gear. Orders placed before noon leave the same day.",
    4: "Refunds are paid within fourteen days to the original payment method after the return arrives.",
    5: "A pour-over brewer gives a clean cup: medium-fine grind, bloom for thirty seconds, then pour slowly.",
}
CONTRACT: dict[str, Any] = {
    "name": "support.notes",
    "version": "1.0.0",
    "title": "Support notes",
    "description": "Knowledge-base notes written by the support team.",
    "owner": {"team": "support"},
    "source": {"connection": "kb", "table": "notes"},
    "primary_key": ["note_id"],
    "columns": [
        {"name": "note_id", "type": "integer", "description": "Note number", "nullable": False},
        {"name": "title", "type": "string", "description": "Short title"},
        {"name": "body", "type": "string", "description": "Note text"},
        {"name": "author_email", "type": "string", "pii": "email", "description": "Who wrote it"},
    ],
    "policy": {
        "access": ["role:support"],
        "masking": [{"columns": ["author_email"], "unless": "role:pii-reader", "method": "hash"}],
    },
    # every text field chunked on its own: the tests below count title chunks too (context: see the end)
    "retrieval": {
        "text_fields": ["title", "body", "author_email"],
        "chunk": {"size": 64, "overlap": 16},
        "context_fields": [],
    },
}


def _contract(**changes: Any) -> ProductContract:
    return ProductContract.model_validate({**CONTRACT, **changes})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "kb.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, title TEXT, body TEXT, author_email TEXT)")
        conn.executemany(
            "INSERT INTO notes VALUES (?, ?, ?, ?)",
            [(i, f"Note {i}", body, f"writer{i}@example.org") for i, body in BODIES.items()],
        )
    conn.close()
    return path


def _sql(db: Path, statement: str, *args: Any) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement, args)
    conn.close()


@pytest.fixture
async def connector(db: Path) -> AsyncIterator[Connector]:
    async with connector_for(ConnectionConfig(name="kb", kind="sqlite", path=str(db))) as conn:
        yield conn


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SearchStore]:
    async with EmbeddedSearchStore(tmp_path / "search.db") as search_store:
        yield search_store


async def _index(
    connector: Connector, store: SearchStore, embedder: FakeEmbedder, contract: ProductContract | None = None, **kw: Any
) -> IndexReport:
    return await index_product(
        contract or _contract(), connector, store, embedder, compiler=Compiler(connector.dialect, SALT), **kw
    )


def _chunk_count(text: str) -> int:
    return len(chunk_text(text, 64, 16))


def _ids(chunks: list[IndexedChunk]) -> set[str]:
    return {c.id for c in chunks}


async def test_first_run_indexes_every_row_and_skips_the_masked_field(connector: Connector, store: SearchStore) -> None:
    embedder = FakeEmbedder()
    report = await _index(connector, store, embedder)
    expected_chunks = sum(_chunk_count(b) + _chunk_count(f"Note {i}") for i, b in BODIES.items())
    assert (report.rows_seen, report.rows_new, report.rows_changed, report.rows_unchanged) == (5, 5, 0, 0)
    assert report.chunks_embedded == expected_chunks == embedder.embedded_texts
    assert list(report.skipped_fields) == ["author_email"]
    stored = await store.indexed("support.notes")
    assert len(stored) == expected_chunks
    assert not any("|author_email|" in c.id for c in stored)
    hits = await hybrid_search(store, embedder, "descaling the espresso machine", k=3, products=["support.notes"])
    assert hits[0].key == {"note_id": 1}
    assert hits[0].product == "support.notes"


async def test_masked_text_never_reaches_the_store(connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    for i in BODIES:
        for query in (f"writer{i}@example.org", f"writer{i}", "example"):
            hits = await store.bm25(query, k=50)
            assert not any("example.org" in h.text or "writer" in h.text for h in hits)
    dense = await store.knn(FakeEmbedder().embed("writer1 example org"), k=100)
    assert dense and not any("@" in h.text for h in dense)


async def test_a_second_run_with_nothing_changed_embeds_nothing(connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    before = _ids(await store.indexed("support.notes"))
    embedder = FakeEmbedder()  # a fresh cache: only the content hashes in the store can spare the work
    report = await _index(connector, store, embedder)
    assert embedder.batches == []
    assert (report.rows_unchanged, report.rows_new, report.rows_changed, report.rows_deleted) == (5, 0, 0, 0)
    assert (report.chunks_embedded, report.chunks_deleted) == (0, 0)
    assert _ids(await store.indexed("support.notes")) == before


async def test_changing_one_row_re_embeds_exactly_its_chunk_set(
    db: Path, connector: Connector, store: SearchStore
) -> None:
    await _index(connector, store, FakeEmbedder())
    new_body = "Descaling is now done by the service team; book a visit in the app."
    _sql(db, "UPDATE notes SET body = ? WHERE note_id = 1", new_body)
    embedder = FakeEmbedder()
    report = await _index(connector, store, embedder)
    assert sorted(t for batch in embedder.batches for t in batch) == sorted(chunk_text(new_body, 64, 16))
    assert (report.rows_changed, report.rows_unchanged) == (1, 4)
    assert report.chunks_deleted == max(0, _chunk_count(BODIES[1]) - _chunk_count(new_body))
    body_ids = {c.id for c in await store.indexed("support.notes") if c.id.startswith("support.notes|note_id=1|body|")}
    assert len(body_ids) == _chunk_count(new_body)
    hits = await hybrid_search(store, embedder, "book a service visit", k=1, mode="bm25", products=["support.notes"])
    assert hits[0].key == {"note_id": 1} and "service" in hits[0].text


async def test_deleting_a_row_removes_its_chunks(db: Path, connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    _sql(db, "DELETE FROM notes WHERE note_id = 3")
    embedder = FakeEmbedder()
    report = await _index(connector, store, embedder)
    assert (report.rows_deleted, report.rows_unchanged, report.chunks_embedded) == (1, 4, 0)
    assert report.chunks_deleted == _chunk_count(BODIES[3]) + 1
    assert not any("note_id=3|" in c.id for c in await store.indexed("support.notes"))
    hits = await store.bm25("Rotterdam warehouse", k=10)
    assert not any(h.key == {"note_id": 3} for h in hits)


async def test_an_emptied_field_loses_its_chunks(db: Path, connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    _sql(db, "UPDATE notes SET body = NULL WHERE note_id = 2")
    report = await _index(connector, store, FakeEmbedder())
    assert report.rows_changed == 1 and report.chunks_deleted == _chunk_count(BODIES[2])
    assert not any("note_id=2|body|" in c.id for c in await store.indexed("support.notes"))


class _FailingEmbedder(FakeEmbedder):
    """Fails on its second batch, like a model crashing halfway through a run."""

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        if self.batches:
            raise EmbeddingError("model crashed")
        return super().embed_batch(texts)


class _FailingStore(SearchStore):
    """Delegates reads, fails the write."""

    kind = "failing"

    def __init__(self, inner: SearchStore) -> None:
        self.inner = inner

    async def apply(
        self,
        product: str,
        upserts: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        deletes: Sequence[str],
        **kw: Any,
    ) -> None:
        raise ConnectorError("disk full")

    async def indexed(self, product: str) -> list[IndexedChunk]:
        return await self.inner.indexed(product)

    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[ChunkHit]:
        return await self.inner.bm25(query, k=k, products=products)

    async def knn(
        self, vector: npt.NDArray[np.float32], *, k: int, products: Sequence[str] | None = None
    ) -> list[ChunkHit]:
        return await self.inner.knn(vector, k=k, products=products)

    async def drop(self, product: str) -> None:
        await self.inner.drop(product)


async def test_an_interrupted_run_leaves_the_previous_index_searchable(
    db: Path, connector: Connector, store: SearchStore
) -> None:
    await _index(connector, store, FakeEmbedder())
    before = _ids(await store.indexed("support.notes"))
    previous = await hybrid_search(store, FakeEmbedder(), "green tea temperature", k=3, products=["support.notes"])
    for i in range(6, 200):
        _sql(db, "INSERT INTO notes VALUES (?, ?, ?, NULL)", i, f"Note {i}", f"Filler note number {i} about tea.")
    _sql(db, "DELETE FROM notes WHERE note_id = 2")
    with pytest.raises(EmbeddingError):
        await _index(connector, store, _FailingEmbedder(), page_size=50)
    with pytest.raises(ConnectorError):
        await _index(connector, _FailingStore(store), FakeEmbedder(), page_size=50)
    assert _ids(await store.indexed("support.notes")) == before
    again = await hybrid_search(store, FakeEmbedder(), "green tea temperature", k=3, products=["support.notes"])
    assert [(h.key, h.chunk, h.field) for h in again] == [(h.key, h.chunk, h.field) for h in previous]
    assert again[0].key == {"note_id": 2}


async def test_keyset_pages_cover_every_row(db: Path, connector: Connector, store: SearchStore) -> None:
    for i in range(6, 48):
        _sql(db, "INSERT INTO notes VALUES (?, ?, NULL, NULL)", i, f"Title {i}")
    events: list[IndexProgress] = []
    report = await _index(connector, store, FakeEmbedder(), page_size=5, progress=events.append)
    assert report.rows_seen == report.rows_new == 47
    keys = {c.id.split("|")[1] for c in await store.indexed("support.notes")}
    assert keys == {f"note_id={i}" for i in range(1, 48)}
    assert events[-1].phase == "done" and events[-1].rows_done == events[-1].rows_total == 47
    assert [e.rows_read for e in events if e.phase == "reading"] == [*range(5, 47, 5), 47]


async def test_progress_counts_a_row_done_once_its_chunks_are_embedded_not_when_read(
    db: Path, connector: Connector, store: SearchStore
) -> None:
    for i in range(6, 200):
        _sql(db, "INSERT INTO notes VALUES (?, ?, ?, NULL)", i, f"Title {i}", BODIES[i % 5 + 1] * 3)
    events: list[IndexProgress] = []
    await _index(connector, store, FakeEmbedder(), page_size=500, progress=events.append)
    [read] = [e for e in events if e.phase == "reading"]
    assert (read.rows_read, read.rows_done) == (199, 0)  # all read in one page, nothing embedded yet
    embedding = [e.rows_done for e in events if e.phase == "embedding"]
    assert len(embedding) > 10 and embedding == sorted(embedding) and embedding[-1] == 199
    assert 0 < embedding[len(embedding) // 2] < 199  # the count moves with the batches
    again = await _index(connector, store, FakeEmbedder(), page_size=500, progress=events.append)
    assert again.rows_unchanged == 199 and events[-1].rows_done == 199  # unchanged rows are done once read


async def test_a_field_masked_later_loses_its_chunks(connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    policy = {**CONTRACT["policy"], "masking": [{"columns": ["author_email", "body"], "method": "redact"}]}
    report = await _index(connector, store, FakeEmbedder(), _contract(policy=policy))
    assert set(report.skipped_fields) == {"author_email", "body"}
    assert report.chunks_deleted == sum(_chunk_count(b) for b in BODIES.values())
    assert all("|title|" in c.id for c in await store.indexed("support.notes"))


async def test_changed_chunk_settings_re_chunk_every_row(connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    retrieval = {"text_fields": ["body"], "chunk": {"size": 40, "overlap": 0}}
    report = await _index(connector, store, FakeEmbedder(), _contract(retrieval=retrieval))
    assert report.rows_changed == 5
    stored = await store.indexed("support.notes")
    assert len(stored) == sum(len(chunk_text(b, 40, 0)) for b in BODIES.values())


async def test_rebuild_re_embeds_every_row(connector: Connector, store: SearchStore) -> None:
    await _index(connector, store, FakeEmbedder())
    embedder = FakeEmbedder()
    report = await _index(connector, store, embedder, rebuild=True)
    assert report.rows_changed == 5 and embedder.embedded_texts == report.chunks_embedded > 0
    assert report.chunks_deleted == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retrieval": None}, "no retrieval section"),
        ({"primary_key": []}, "needs a primary_key"),
    ],
)
async def test_unindexable_contracts_are_refused(
    connector: Connector, store: SearchStore, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await _index(connector, store, FakeEmbedder(), _contract(**changes))


def test_a_chunk_overlap_not_below_the_chunk_size_is_refused_by_the_contract() -> None:
    with pytest.raises(ValueError, match="overlap"):
        _contract(retrieval={"text_fields": ["body"], "chunk": {"size": 64, "overlap": 64}})


async def test_a_folder_of_markdown_files_is_a_document_product(tmp_path: Path, store: SearchStore) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nItems can be returned within 30 days.\n", encoding="utf-8")
    (docs / "shipping.md").write_text("# Shipping\n\nParcels leave the warehouse daily.\n", encoding="utf-8")
    contract = ProductContract.model_validate(
        {
            "name": "docs.handbook",
            "version": "1.0.0",
            "title": "Handbook",
            "description": "Shop handbook pages.",
            "owner": {"team": "docs"},
            "source": {"connection": "handbook", "table": "pages"},
            "primary_key": ["filename"],
            "columns": [
                {"name": "filename", "type": "string", "description": "Path of the page"},
                {"name": "content", "type": "string", "description": "Markdown text"},
            ],
            "policy": {"access": ["*"]},
            "retrieval": {"text_fields": ["content"]},
        }
    )
    config = ConnectionConfig(name="handbook", kind="duckdb", files={"pages": str(docs / "*.md")})
    async with connector_for(config) as duck:
        report = await index_product(contract, duck, store, FakeEmbedder(), compiler=Compiler(duck.dialect, SALT))
    assert report.rows_new == 2
    hits = await hybrid_search(store, FakeEmbedder(), "returned within days", k=1, products=["docs.handbook"])
    assert hits[0].key == {"filename": "returns.md"}  # relative to the folder: no server path


def _titled(**retrieval: Any) -> ProductContract:
    """The notes with the default retrieval context: the title heads every body chunk."""
    return _contract(retrieval={"text_fields": ["title", "body"], "chunk": {"size": 64, "overlap": 16}, **retrieval})


async def test_the_title_heads_every_chunk_of_the_body_and_is_no_chunk_of_its_own(
    db: Path, connector: Connector, store: SearchStore
) -> None:
    _sql(db, "INSERT INTO notes VALUES (6, 'Only a title', NULL, NULL)")
    await _index(connector, store, FakeEmbedder(), _titled())
    hits = await hybrid_search(store, FakeEmbedder(), "descaling citric acid", k=50, products=["support.notes"])
    by_row: dict[int, list[str]] = {}
    for hit in hits:
        by_row.setdefault(hit.key["note_id"], []).append(hit.field)
        if hit.key["note_id"] in BODIES:
            assert hit.field == "body" and hit.text.startswith(f"Note {hit.key['note_id']}\n\n"), hit
    stored = await store.indexed("support.notes")
    fields = {(c.id.split("|")[1], c.id.split("|")[2]) for c in stored}
    assert {f for _, f in fields} == {"body", "title"}
    assert {row for row, f in fields if f == "title"} == {"note_id=6"}  # a row with no text keeps its title
    assert len(stored) == sum(_chunk_count(b) for b in BODIES.values()) + 1


async def test_an_index_built_without_context_re_embeds_once_and_loses_its_title_chunks(
    db: Path, connector: Connector, store: SearchStore
) -> None:
    await _index(connector, store, FakeEmbedder(), _titled(context_fields=[]))
    before = await store.indexed("support.notes")
    assert any("|title|" in c.id for c in before)
    upgrade = await _index(connector, store, FakeEmbedder(), _titled())
    assert upgrade.rows_changed == 5 and upgrade.chunks_embedded == sum(_chunk_count(b) for b in BODIES.values())
    assert not any("|title|" in c.id for c in await store.indexed("support.notes"))
    again = await _index(connector, store, FakeEmbedder(), _titled())
    assert (again.rows_unchanged, again.chunks_embedded) == (5, 0)
    _sql(db, "UPDATE notes SET title = 'Descaling' WHERE note_id = 1")  # a new title re-embeds its row
    retitled = await _index(connector, store, FakeEmbedder(), _titled())
    assert (retitled.rows_changed, retitled.chunks_embedded) == (1, _chunk_count(BODIES[1]))


async def test_a_masked_context_field_never_heads_a_chunk(connector: Connector, store: SearchStore) -> None:
    contract = _contract(
        retrieval={"text_fields": ["body"], "context_fields": ["author_email"], "chunk": {"size": 64, "overlap": 16}}
    )
    await _index(connector, store, FakeEmbedder(), contract)
    hits = await hybrid_search(store, FakeEmbedder(), "writer1@example.org", k=50, products=["support.notes"])
    assert hits and not [h for h in hits if "@" in h.text]


async def test_a_run_records_the_source_state_it_read_even_when_nothing_changed(
    connector: Connector, store: SearchStore
) -> None:
    before = datetime.now(UTC)
    first = await _index(connector, store, FakeEmbedder())  # no as_of given: the moment it started reading
    after = datetime.now(UTC)
    assert first.as_of is not None and before <= first.as_of <= after
    assert (await store.index_states(["support.notes"]))["support.notes"].as_of == first.as_of

    measured = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # e.g. the product's freshness as_of
    embedder = FakeEmbedder()
    again = await _index(connector, store, embedder, as_of=measured)
    assert embedder.batches == [] and again.as_of == measured
    state = (await store.index_states(["support.notes"]))["support.notes"]
    assert state.as_of == measured and state.indexed_at is not None and state.indexed_at >= after
    assert state.chunks == len(await store.indexed("support.notes"))


async def test_a_failed_run_leaves_the_recorded_state_as_it_was(connector: Connector, store: SearchStore) -> None:
    first = await _index(connector, store, FakeEmbedder())
    with pytest.raises(ConnectorError):
        await _index(connector, _FailingStore(store), FakeEmbedder(), as_of=datetime(2030, 1, 1, tzinfo=UTC))
    assert (await store.index_states(["support.notes"]))["support.notes"].as_of == first.as_of
