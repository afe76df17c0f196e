"""The embedded search store: one local SQLite file, BM25 as FTS5 ranks it, vectors by cosine in numpy.

Layout of the file (WAL journal, so readers in other processes keep reading while an index run
writes)::

    meta(key, value)          schema_version, generation (bumped by every write transaction)
    products(product, model_id, dimensions, generation, as_of, indexed_at)   as_of, indexed_at: ISO UTC
    chunks(rowid, id, product, key, field, chunk, text, field_hash, vector)   vector: float32 bytes
    chunks_fts                FTS5 over chunks.text (external content, kept in step by triggers),
                              tokenizer ``porter unicode61 remove_diacritics 2``

BM25 is FTS5's ``bm25()``, computed by an in-memory index of the FTS5 postings
(:mod:`connectors._bm25_index`: same rows, same order, same doubles; built in the background from
FTS5's ``fts5vocab`` tables the first time a BM25 query finds it missing or of an older generation,
FTS5 answering meanwhile), because FTS5 scores every row holding a query word (no top-k pruning)
and SciFact claims match ~30% of the chunks: 162 ms at 100k chunks. The index is of one
``meta.generation``: a reader whose snapshot is another generation (a write committed since, in any
process) is answered by FTS5 while the index is rebuilt, and a failed write changes no generation,
so the index stays in use. User text never reaches FTS5 syntax: the query is cut into words,
each word is quoted as an FTS5 string and the words are OR-ed (like Elasticsearch's ``match``), so
``NEAR(``, ``*``, ``AND``, quotes or column filters in the text are plain words. FTS5's own path ranks
in FTS5 alone (``ORDER BY bm25, rowid LIMIT 4k`` over every product) and then reads the few ranked
rows, keeping those of the products asked for; only when fewer than ``k`` of them are among the
``4k`` best does it rank inside the products with the join (the same order either way: filtering a
ranking keeps its order). Joining ``chunks`` first read every matching row, text included, before
the sort kept ``k``. FTS5 still scores every matching row: it has no top-k pruning, so the leg grows
with the number of chunks holding a query word (SciFact claims match ~30% of the chunks).
Readers map the file (``mmap_size``): a lookup per ranked row then costs no ``read`` system call and
no copy (10k SciFact chunks, load 14: 119 → 57 ms for the joined query).

Each index run records in ``products`` the source state it read (``as_of``) and when it ran
(``indexed_at``), in the same transaction as its chunks (:meth:`EmbeddedSearchStore.index_states`); a
run that changed nothing updates only those two (no new generation: caches stay). A file of schema
version 1 gains the two columns (NULL until its next index run) the first time this version opens it.

Vectors are float32 rows loaded from the file and cached in memory per product, reloaded when the
product's ``generation`` changes (so a server sees every new index run, whichever process wrote it).
Products of 4k rows or more (and 256 dimensions or more) also keep one sign bit per dimension
(:mod:`connectors._vector_quant`): the rows closest by Hamming distance are re-ranked exactly, so a
query reads 48 bytes a row instead of 1.5 KiB; smaller products are scanned exactly with
``einsum(matrix, query)``. ``einsum`` rather than ``@``: a
matrix-vector product is memory-bound, and OpenBLAS's threads only add wake-up contention on a busy
box (5k rows: 16 ms with ``@`` against 1.1 ms with ``einsum`` at load 6 on 2 cores; equal at 100k).

Chosen by measurement on this box (2 cores shared with a C++ build, load 3.5-6; 384-d random unit
vectors, k=100, median of 50 queries; HNSW engines tuned to ef=200 for k=100)::

    engine                       n     build      k=100 query   recall@100   on disk
    numpy exact                  5k      0.14 s      0.4 ms        1.000        9.8 MiB (SQLite blobs)
    usearch exact (SIMD)         5k        -         2.4 ms        1.000          -
    usearch HNSW                 5k      6.9 s       1.9 ms        0.852        8.0 MiB (own file)
    DuckDB vss HNSW              5k     13.8 s     127 ms          0.852       15.0 MiB
    numpy exact                100k      1.7 s      24 ms          1.000        196 MiB (SQLite blobs)
    usearch exact (SIMD)       100k        -        47 ms          1.000          -
    usearch HNSW               100k    609 s        10 ms          0.180        161 MiB (own file)
    DuckDB vss HNSW            100k    976 s       125 ms          0.168        390 MiB

    this store end to end      5k: index run 1.0 s, kNN 8 ms warm / 70 ms after a write, BM25 7 ms, 11 MiB
    (load 6, two products)   100k: index run 28 s, kNN 57 ms (33 ms one 50k product) / 1.2 s after a
                                   write, BM25 33 ms, 215 MiB

Exact search won for a single machine, and the sign-bit scan keeps what made it win (codes loaded
with the vectors, no index file, product filters unchanged) at recall@10 0.995 against the exact
scan on ``bench/search_latency.py``'s 100k chunks (1.000 at 10k): perfect recall, no index build (an index run stays one
SQLite transaction, atomic with the text), product filters for free (one matrix per product), one
file. Uniform random vectors are HNSW's worst case, but even so its query-time gain at 100k does not
pay for 10-16 minutes of build per change on this box, a second file (usearch) or a single-writer
file that shuts out readers (DuckDB). sqlite-vec needs SQLite extension loading, which this Python's
``sqlite3`` lacks (no ``enable_load_extension``), and is brute force too. Past a few hundred thousand
chunks, use the Elasticsearch store.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from catalog.errors import ConnectorError, ConnectorUnavailableError, InvalidRequestError, QueryExecutionError
from connectors._bm25_index import Bm25Index, QueryTokenizer, build_index
from connectors._common import driver_message
from connectors._search import checked_vectors, model_mismatch
from connectors._vector_quant import QUANTIZE_MIN_DIMENSIONS, QUANTIZE_MIN_ROWS, SignCodes, nearest
from connectors.search_base import Chunk, ChunkHit, IndexedChunk, IndexState, SearchStore

__all__ = ["EmbeddedSearchStore", "fts5_query", "query_words"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
BUSY_TIMEOUT_MS = 30_000
#: How much of the file SQLite maps into memory; BM25 reads a page per ranked row (measured below).
MMAP_BYTES = 1 << 30
MAX_QUERY_TERMS = 64
#: FTS5's tokenizer of ``chunks_fts``; the in-memory BM25 index cuts query words with the same one.
TOKENIZE = "porter unicode61 remove_diacritics 2"
#: After a failed build of the in-memory BM25 index, FTS5 ranks alone for this long before a retry.
BM25_RETRY_SECONDS = 60.0
_WORD = re.compile(r"\w+")
# Lucene's English stop words, which Elasticsearch's ``english`` analyzer drops too: the two stores rank alike.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they"
    " this to was will with".split()
)
_UNAVAILABLE = re.compile(r"locked|busy|unable to open|disk|readonly|not a database|malformed|full")
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    product TEXT PRIMARY KEY, model_id TEXT NOT NULL, dimensions INTEGER NOT NULL, generation INTEGER NOT NULL,
    as_of TEXT, indexed_at TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, product TEXT NOT NULL, key TEXT NOT NULL,
    field TEXT NOT NULL, chunk INTEGER NOT NULL, text TEXT NOT NULL, field_hash TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_product ON chunks (product);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, content='chunks', content_rowid='rowid', tokenize='{TOKENIZE}'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE OF text ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
INSERT OR IGNORE INTO meta VALUES ('schema_version', '2'), ('generation', '0');
COMMIT;
"""
#: Version 1 -> 2: the products' index state (run inside one IMMEDIATE transaction, version checked again).
_UPGRADE_1 = (
    "ALTER TABLE products ADD COLUMN as_of TEXT",
    "ALTER TABLE products ADD COLUMN indexed_at TEXT",
    "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
)
_UPSERT = """
INSERT INTO chunks (id, product, key, field, chunk, text, field_hash, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET key = excluded.key, field = excluded.field, chunk = excluded.chunk,
    text = excluded.text, field_hash = excluded.field_hash, vector = excluded.vector
"""
_HIT_COLUMNS = "c.rowid, c.product, c.key, c.field, c.chunk, c.text"
#: FTS5's BM25 ranking of every product, ties by rowid: the order the product-filtered ranking keeps.
_BM25_RANKED = (
    "SELECT rowid, bm25(chunks_fts) AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score, rowid LIMIT ?"
)
#: How many chunks per hit asked for the BM25 leg ranks over every product before filtering by product.
BM25_OVERFETCH = 4
_ROWID_BATCH = 500


def query_words(text: str) -> list[str]:
    """The words of ``text`` a BM25 query ORs: lower-cased, first occurrence only, English stop words
    dropped (as Elasticsearch's ``english`` analyzer does), at most :data:`MAX_QUERY_TERMS`."""
    words = [w for w in dict.fromkeys(w.lower() for w in _WORD.findall(text)) if w not in STOP_WORDS]
    return words[:MAX_QUERY_TERMS]


def fts5_query(text: str | list[str]) -> str:
    """``text`` (or its :func:`query_words`) as an FTS5 query matching any of its words, each quoted:
    no operator can get through.

    Returns an empty string when the text holds no word.
    """
    words = query_words(text) if isinstance(text, str) else text
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


@dataclass(frozen=True)
class _Vectors:
    """The cached vectors of one product as of ``generation``: ``matrix`` rows belong to ``rowids``;
    ``codes`` (sign bits for the candidate scan) when the product is large enough to use them."""

    generation: int
    rowids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.float32]
    codes: SignCodes | None


class EmbeddedSearchStore(SearchStore):
    """Search store in one SQLite file at ``path`` (created with its folder on first use).

    ``indexes=False`` ranks BM25 in FTS5 alone and scans every vector exactly: the reference the
    in-memory BM25 index and the sign-bit codes are measured against (same answers, slower).
    """

    kind = "embedded"

    def __init__(self, path: str | Path, *, indexes: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        self.indexes = indexes
        self._lock = threading.Lock()  # guards the connections and the schema flag
        self._write_lock = threading.Lock()  # one writer per store; other processes wait on SQLite's lock
        self._readers: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._ready = False
        self._closed = False
        self._cache: dict[str, _Vectors] = {}
        self._cache_lock = threading.Lock()
        self._bm25: Bm25Index | None = None  # guarded by _lock, as the build flags
        self._bm25_building = False
        self._bm25_failed_at = -BM25_RETRY_SECONDS
        self._tokenizer = QueryTokenizer(TOKENIZE)

    # -- connections and the one place driver errors are mapped ---------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # pages read in place, not copied per lookup
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map sqlite3 errors to connector errors.

        Raises:
            ConnectorUnavailableError: the file cannot be opened, is no database, or stays locked.
            QueryExecutionError: SQLite failed a statement.
        """
        try:
            yield
        except ConnectorError:
            raise
        except sqlite3.Error as exc:
            message = driver_message(exc)
            if _UNAVAILABLE.search(message):
                raise ConnectorUnavailableError(
                    f"cannot use search store {str(self.path)!r}: {message}", orig=exc
                ) from exc
            raise QueryExecutionError(f"search store {str(self.path)!r} failed: {message}", orig=exc) from exc

    def _ensure_schema(self) -> None:
        with self._lock:
            if self._closed:
                raise ConnectorUnavailableError(f"search store {str(self.path)!r} is closed")
            if self._ready:
                return
            if self._writer is None:
                self._writer = self._connect()
            with self._write_lock:
                try:  # an existing file: no write lock needed (an index run may hold it for a while)
                    row = self._writer.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                except sqlite3.OperationalError:  # no such table: a new file
                    self._writer.executescript(_SCHEMA)
                    row = self._writer.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row[0] == "1":
                    row = self._upgrade(self._writer)
            if row[0] != SCHEMA_VERSION:
                raise ConnectorUnavailableError(
                    f"search store {str(self.path)!r} has schema version {row[0]}, this version reads {SCHEMA_VERSION}"
                )
            self._ready = True

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> tuple[Any, ...]:
        """Bring a version 1 file to version 2 (another process may have done it meanwhile); the new version row."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version == "1":
                for statement in _UPGRADE_1:
                    conn.execute(statement)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        row: tuple[Any, ...] = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return row

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A pooled read-only connection inside one read transaction (a consistent snapshot)."""
        with self._errors():
            self._ensure_schema()
            with self._lock:
                conn = self._readers.pop() if self._readers else None
            if conn is None:
                conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            finally:
                with self._lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._readers.append(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one IMMEDIATE transaction, rolled back on any error."""
        with self._errors():
            self._ensure_schema()
            assert self._writer is not None
            with self._write_lock:
                conn = self._writer
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    # -- writes ----------------------------------------------------------------------------------

    async def apply(
        self,
        product: str,
        upserts: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        deletes: Sequence[str],
        *,
        model_id: str,
        as_of: datetime | None = None,
    ) -> None:
        """One transaction: an interrupted run leaves the previous index as it was, its state included.

        Raises:
            InvalidRequestError: chunks of another product, vectors not one row per upsert, or a
                ``model_id``/dimensions other than the product was indexed with (re-index needed).
            ConnectorError: SQLite failed; nothing of the run was written.
        """
        matrix = checked_vectors(product, upserts, vectors)
        rows = [
            (
                c.id,
                product,
                json.dumps(c.key, default=str),
                c.field,
                c.chunk,
                c.text,
                c.content_hash,
                matrix[i].tobytes(),
            )
            for i, c in enumerate(upserts)
        ]
        state = None if as_of is None else (as_of.astimezone(UTC).isoformat(), datetime.now(UTC).isoformat())
        await anyio.to_thread.run_sync(self._apply_sync, product, rows, list(deletes), model_id, matrix.shape[1], state)

    def _apply_sync(
        self,
        product: str,
        rows: list[tuple[Any, ...]],
        deletes: list[str],
        model_id: str,
        dimensions: int,
        state: tuple[str, str] | None,
    ) -> None:
        with self._write() as conn:
            known = conn.execute("SELECT model_id, dimensions FROM products WHERE product = ?", (product,)).fetchone()
            if known is not None and (known[0] != model_id or (rows and known[1] != dimensions)):
                raise model_mismatch(product, known, model_id, dimensions)
            if known is None and not rows:
                return  # nothing of the product is stored, nothing to write
            if state is not None:
                conn.execute("UPDATE products SET as_of = ?, indexed_at = ? WHERE product = ?", (*state, product))
            if not rows and not deletes:
                return  # in step already: a new state, no new generation (caches and BM25 index stay)
            generation = self._next_generation(conn)
            conn.execute(
                "INSERT INTO products (product, model_id, dimensions, generation, as_of, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (product) DO UPDATE SET generation = ?",
                (product, model_id, dimensions, generation, *(state or (None, None)), generation),
            )
            conn.executemany(_UPSERT, rows)
            conn.executemany("DELETE FROM chunks WHERE product = ? AND id = ?", [(product, d) for d in deletes])

    async def drop(self, product: str) -> None:
        """Raises:
        ConnectorError: SQLite failed; the product's index stays as it was.
        """
        await anyio.to_thread.run_sync(self._drop_sync, product)

    def _drop_sync(self, product: str) -> None:
        with self._write() as conn:
            self._next_generation(conn)
            conn.execute("DELETE FROM chunks WHERE product = ?", (product,))
            conn.execute("DELETE FROM products WHERE product = ?", (product,))

    @staticmethod
    def _next_generation(conn: sqlite3.Connection) -> int:
        (generation,) = conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
            " RETURNING CAST(value AS INTEGER)"
        ).fetchone()
        return int(generation)

    # -- reads -----------------------------------------------------------------------------------

    async def indexed(self, product: str) -> list[IndexedChunk]:
        """Raises:
        ConnectorError: SQLite failed.
        """
        return await anyio.to_thread.run_sync(self._indexed_sync, product)

    def _indexed_sync(self, product: str) -> list[IndexedChunk]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, field_hash FROM chunks WHERE product = ? ORDER BY id", (product,)
            ).fetchall()
        return [IndexedChunk(id=i, field_hash=h) for i, h in rows]

    async def index_states(self, products: Sequence[str]) -> dict[str, IndexState]:
        """Raises:
        ConnectorError: SQLite failed.
        """
        if not products:
            return {}
        return await anyio.to_thread.run_sync(self._index_states_sync, list(products))

    def _index_states_sync(self, products: list[str]) -> dict[str, IndexState]:
        marks = ",".join("?" * len(products))
        with self._read() as conn:
            rows = conn.execute(
                "SELECT p.product, p.as_of, p.indexed_at, (SELECT count(*) FROM chunks c WHERE c.product = p.product)"
                f" FROM products p WHERE p.product IN ({marks})",
                products,
            ).fetchall()
        return {
            name: IndexState(product=name, as_of=as_of, indexed_at=indexed_at, chunks=chunks)
            for name, as_of, indexed_at, chunks in rows
        }

    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[ChunkHit]:
        """Any text is a valid query (words OR-ed); a text without words finds nothing.

        Raises:
            ConnectorError: SQLite failed.
        """
        words = query_words(query)
        if not words or k <= 0 or (products is not None and not products):
            return []
        return await anyio.to_thread.run_sync(self._bm25_sync, words, k, products)

    def _bm25_sync(self, words: list[str], k: int, products: Sequence[str] | None) -> list[ChunkHit]:
        with self._read() as conn:
            index = self._bm25_index(conn)
            tokens = self._tokenizer.tokens(words) if index is not None else []
            if index is not None and all(len(t) == 1 for t in tokens):
                ranked = index.top([t[0] for t in tokens], k, products)
                rows = _rows_by_rowid(conn, [rowid for rowid, _ in ranked])  # all there: same generation
                kept = [(rows[rowid], score) for rowid, score in ranked if rowid in rows]
                return [_hit(row, score, rank) for rank, (row, score) in enumerate(kept, start=1)]
            return self._fts5_bm25(conn, fts5_query(words), k, products)

    def _fts5_bm25(
        self, conn: sqlite3.Connection, match: str, k: int, products: Sequence[str] | None
    ) -> list[ChunkHit]:
        """FTS5's own ranking: while the in-memory index is (re)built, and for words FTS5 cuts in several tokens."""
        wanted = None if products is None else set(products)
        depth = k if wanted is None else k * BM25_OVERFETCH
        # Rank in FTS5 alone, then read the few rows ranked: joining chunks first would read every
        # matching row (text included) before the sort keeps k of them.
        ranked = conn.execute(_BM25_RANKED, (match, depth)).fetchall()
        rows = _rows_by_rowid(conn, [rowid for rowid, _ in ranked])
        kept = [(rows[rowid], -score) for rowid, score in ranked if _wanted(rows.get(rowid), wanted)][:k]
        if len(kept) < k and len(ranked) == depth and products is not None:
            # The products asked for hold few of the best chunks: rank within them (same order, same scores).
            where, params = _product_filter(products)
            sql = (
                f"SELECT {_HIT_COLUMNS}, -bm25(chunks_fts) AS score"
                " FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid"
                f" WHERE chunks_fts MATCH ?{where} ORDER BY bm25(chunks_fts), c.rowid LIMIT ?"
            )
            kept = [(row, row[6]) for row in conn.execute(sql, [match, *params, k]).fetchall()]
        return [_hit(row, score, rank) for rank, (row, score) in enumerate(kept, start=1)]

    def _bm25_index(self, conn: sqlite3.Connection) -> Bm25Index | None:
        """The in-memory BM25 index when it is of the reader's snapshot; else None, and a rebuild starts
        in the background (FTS5 ranks meanwhile: same order, same scores)."""
        if not self.indexes:
            return None
        (generation,) = conn.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'").fetchone()
        with self._lock:
            index = self._bm25
            if index is not None and index.generation == generation:
                return index
            if self._closed or self._bm25_building or time.monotonic() - self._bm25_failed_at < BM25_RETRY_SECONDS:
                return None
            self._bm25_building = True
        threading.Thread(target=self._build_bm25, name="bm25-index", daemon=True).start()
        return None

    async def warm(self) -> None:
        """Build the in-memory BM25 index now (a server would otherwise build it after its first BM25
        query, FTS5 ranking meanwhile) and load every product's vectors.

        Raises:
            ConnectorError: SQLite failed.
            ValueError: FTS5's own tables disagree (the index would rank wrongly; FTS5 keeps ranking).
        """
        await anyio.to_thread.run_sync(self._warm_sync)

    def _warm_sync(self) -> None:
        with self._read() as conn:  # creates the file and its schema when new
            for product, generation in conn.execute("SELECT product, generation FROM products").fetchall():
                self._vectors(conn, product, generation)
        if self.indexes:
            with self._lock:
                self._bm25_building = True
            self._build_bm25(raise_errors=True)

    def _build_bm25(self, *, raise_errors: bool = False) -> None:
        """Build the index of the latest committed generation on a connection of its own (``temp``
        tables); a failure leaves the previous index, and FTS5 ranks until a retry succeeds."""
        try:
            with self._errors():
                # mode=rw: a file removed meanwhile is an error, not a new empty file
                uri = f"{self.path.as_uri()}?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
                try:
                    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
                    conn.execute("BEGIN")
                    (generation,) = conn.execute(
                        "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'"
                    ).fetchone()
                    index = build_index(conn, generation)
                finally:
                    conn.close()
            with self._lock:
                if not self._closed and (self._bm25 is None or self._bm25.generation < generation):
                    self._bm25 = index
        except (ConnectorError, ValueError) as exc:
            with self._lock:
                self._bm25_failed_at = time.monotonic()
            if raise_errors:
                raise
            log.warning("BM25 index of %s not built, FTS5 ranks meanwhile: %s", self.path, exc)
        finally:
            with self._lock:
                self._bm25_building = False

    async def knn(
        self, vector: npt.NDArray[np.float32], *, k: int, products: Sequence[str] | None = None
    ) -> list[ChunkHit]:
        """Exact cosine search over the products indexed with ``len(vector)`` dimensions.

        Raises:
            InvalidRequestError: a product named in ``products`` was indexed with other dimensions.
            ConnectorError: SQLite failed.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(query))
        if k <= 0 or (products is not None and not products) or not norm:
            return []
        return await anyio.to_thread.run_sync(self._knn_sync, query / norm, k, products)

    def _knn_sync(self, query: npt.NDArray[np.float32], k: int, products: Sequence[str] | None) -> list[ChunkHit]:
        with self._read() as conn:
            known = conn.execute("SELECT product, dimensions, generation FROM products ORDER BY product").fetchall()
            self._forget_dropped({p for p, _, _ in known})
            wanted = set(products) if products is not None else None
            best_ids: list[npt.NDArray[np.int64]] = []
            best_scores: list[npt.NDArray[np.float32]] = []
            for product, dimensions, generation in known:
                if wanted is not None and product not in wanted:
                    continue
                if dimensions != len(query):
                    if wanted is None:
                        continue
                    raise InvalidRequestError(
                        f"product {product!r} is indexed with {dimensions}-dimensional vectors, "
                        f"the query vector has {len(query)}; embed the query with the product's model"
                    )
                cached = self._vectors(conn, product, generation)
                top, scores = nearest(cached.matrix, cached.codes, query, k)
                best_ids.append(cached.rowids[top])
                best_scores.append(scores)
            if not best_ids:
                return []
            ids, scores = np.concatenate(best_ids), np.concatenate(best_scores)
            order = np.lexsort((ids, -scores))[:k]
            by_rowid = _rows_by_rowid(conn, [int(ids[i]) for i in order])
        hits = [(by_rowid[int(ids[i])], float(scores[i])) for i in order if int(ids[i]) in by_rowid]
        return [_hit(row, score, rank) for rank, (row, score) in enumerate(hits, start=1)]

    def _vectors(self, conn: sqlite3.Connection, product: str, generation: int) -> _Vectors:
        """The product's vectors as of the reader's snapshot, from the cache when it is that generation."""
        with self._cache_lock:
            cached = self._cache.get(product)
        if cached is not None and cached.generation == generation:
            return cached
        (dimensions,) = conn.execute("SELECT dimensions FROM products WHERE product = ?", (product,)).fetchone()
        rows = conn.execute("SELECT rowid, vector FROM chunks WHERE product = ? ORDER BY rowid", (product,)).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32, copy=False)
        matrix = matrix.reshape(-1, dimensions)
        large = self.indexes and len(matrix) >= QUANTIZE_MIN_ROWS and dimensions >= QUANTIZE_MIN_DIMENSIONS
        codes = SignCodes.of(matrix) if large else None
        loaded = _Vectors(generation, np.array([r[0] for r in rows], dtype=np.int64), matrix, codes)
        with self._cache_lock:
            current = self._cache.get(product)
            if current is None or current.generation < generation:
                self._cache[product] = loaded
        return loaded

    def _close_writer(self, writer: sqlite3.Connection) -> None:
        with self._write_lock:
            writer.close()

    def _forget_dropped(self, products: set[str]) -> None:
        with self._cache_lock:
            for product in self._cache.keys() - products:
                del self._cache[product]

    async def aclose(self) -> None:
        """Close the idle connections now; a reader still in use is closed by its user when it is done
        (``_read``), the writer once a write under way has ended: closing a connection another thread is
        running a statement on crashes the process."""
        with self._lock:
            self._closed = True
            idle, self._readers = self._readers, []
            writer, self._writer = self._writer, None
        for conn in idle:
            conn.close()
        if writer is not None:
            await anyio.to_thread.run_sync(self._close_writer, writer)
        with self._cache_lock:
            self._cache.clear()
        with self._lock:
            self._bm25 = None
        self._tokenizer.close()


def _product_filter(products: Sequence[str] | None) -> tuple[str, list[str]]:
    if products is None:
        return "", []
    return f" AND c.product IN ({','.join('?' * len(products))})", list(products)


def _rows_by_rowid(conn: sqlite3.Connection, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
    """The hit columns of the chunks at ``rowids`` (those still stored), read in batches of bound parameters."""
    rows: dict[int, tuple[Any, ...]] = {}
    for start in range(0, len(rowids), _ROWID_BATCH):
        batch = rowids[start : start + _ROWID_BATCH]
        sql = f"SELECT {_HIT_COLUMNS} FROM chunks c WHERE c.rowid IN ({','.join('?' * len(batch))})"
        rows.update((row[0], row) for row in conn.execute(sql, batch))
    return rows


def _wanted(row: tuple[Any, ...] | None, products: set[str] | None) -> bool:
    return row is not None and (products is None or row[1] in products)


def _hit(row: tuple[Any, ...], score: float, rank: int) -> ChunkHit:
    _, product, key, field, chunk, text = row[:6]
    return ChunkHit(product=product, key=json.loads(key), field=field, chunk=chunk, text=text, score=score, rank=rank)
