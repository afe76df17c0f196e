"""An in-memory BM25 index of the embedded search store that ranks exactly as FTS5's ``bm25()``.

FTS5 scores every row holding a query word before ``ORDER BY bm25 LIMIT k`` keeps ``k``: a SciFact
claim matches ~30% of the chunks, so the BM25 leg grew with the store (162 ms at 100k chunks). This
index holds the same postings as numpy arrays and scores a query's posting lists in a few vectorised
passes, then keeps the ``k`` best with a partition.

Same ranking, same scores. The postings, document lengths and row count are read from FTS5 itself
(``fts5vocab`` ``instance`` and ``row`` tables over ``chunks_fts``), and query words are cut by FTS5's own
tokenizer (an in-memory FTS5 table with the store's ``tokenize`` option), so stemming, case folding and
diacritics are FTS5's. Scores follow ``fts5Bm25Function`` (``ext/fts5/fts5_aux.c``) operation by
operation in IEEE doubles::

    avgdl = total tokens / rows
    idf   = log((rows - n + 0.5) / (n + 0.5)), or 1e-6 when not positive     (n: rows holding the word)
    score = Σ over the query's phrases, in query order:
                idf · (tf · (k1 + 1)) / (tf + k1 · (1 - b + b · len / avgdl))       k1 = 1.2, b = 0.75

so each row's score is the same double FTS5 computes (``log`` is libm's, through :func:`math.log`),
and ties order by rowid as the store's ``ORDER BY bm25, rowid`` does. A query word that FTS5 cuts into
several tokens (``foo_bar``) or none is a phrase, not a term: :meth:`Bm25Index.phrases` answers None
and the store asks FTS5.

An index describes one ``generation`` of the store (``meta.generation``, bumped by every write
transaction): the store uses it only for readers whose snapshot is that generation, and rebuilds it
after a write (a failed write changes no generation, so the index stays usable).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Bm25Index", "QueryTokenizer", "build_index"]

K1 = 1.2
B = 0.75
_MIN_IDF = 1e-6
_CACHED_WORDS = 50_000


@dataclass(frozen=True)
class Bm25Index:
    """Postings of every stored chunk as of ``generation``; documents are numbered in rowid order.

    ``starts[t]:starts[t + 1]`` slices ``docs``/``weights`` for term ``t``; a posting's weight is the
    query-independent part of FTS5's score, ``(tf · (k1 + 1)) / (tf + k1 · (1 - b + b · len / avgdl))``,
    computed once with FTS5's operations so ``idf · weight`` is FTS5's double; ``products[d]``
    indexes ``product_names``.
    """

    generation: int
    terms: dict[str, int]
    starts: npt.NDArray[np.int64]
    docs: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float64]
    rowids: npt.NDArray[np.int64]
    products: npt.NDArray[np.int32]
    product_names: tuple[str, ...]
    _scratch: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def rows(self) -> int:
        return len(self.rowids)

    def top(self, terms: Sequence[str], k: int, products: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best ``(rowid, score)`` of the rows holding any of ``terms`` (one term per phrase,
        in query order, repeats counted as FTS5 counts them), within ``products`` when given; best
        first, ties by rowid."""
        if k <= 0 or not self.rows:
            return []
        scores = self._zeros()
        try:
            for term in terms:
                t = self.terms.get(term)
                if t is None:
                    continue  # FTS5's phrase holds no row: it adds 0.0 to every score
                docs = self.docs[self.starts[t] : self.starts[t + 1]]
                scores[docs] += self._idf(len(docs)) * self.weights[self.starts[t] : self.starts[t + 1]]
            matched = np.flatnonzero(scores)  # every matched row scores > 0: idf ≥ 1e-6 and tf ≥ 1
            all_scores = scores[matched]
            scores[matched] = 0.0  # the buffer is all zeros again for the thread's next query
        except BaseException:
            scores.fill(0.0)
            raise
        if products is not None:
            wanted = set(products)
            codes = [i for i, name in enumerate(self.product_names) if name in wanted]
            of = self.products[matched]
            keep = of == codes[0] if len(codes) == 1 else np.isin(of, codes)
            matched, all_scores = matched[keep], all_scores[keep]
        found = all_scores
        if len(found) > k:  # keep every row scoring at least the k-th best: ties are ordered below
            kth = np.partition(found, len(found) - k)[len(found) - k]
            keep = found >= kth
            matched, found = matched[keep], found[keep]
        order = np.lexsort((matched, -found))[:k]  # documents are in rowid order: ties by rowid
        return [(int(self.rowids[matched[i]]), float(found[i])) for i in order]

    def _zeros(self) -> npt.NDArray[np.float64]:
        """This thread's score buffer, all zeros: reused, as a fresh one costs page faults per query."""
        buffer: npt.NDArray[np.float64] | None = getattr(self._scratch, "scores", None)
        if buffer is None:
            buffer = self._scratch.scores = np.zeros(self.rows, dtype=np.float64)
        return buffer

    def _idf(self, holding: int) -> float:
        idf = math.log((self.rows - holding + 0.5) / (holding + 0.5))
        return idf if idf > 0.0 else _MIN_IDF


def build_index(conn: sqlite3.Connection, generation: int) -> Bm25Index:
    """The index of ``chunks_fts`` as ``conn`` sees it: call inside a read transaction whose snapshot
    is ``generation``. ``conn`` must allow ``temp`` tables (the ``fts5vocab`` views live there).

    Raises:
        sqlite3.Error: SQLite failed.
        ValueError: FTS5's tables disagree with each other (the index would rank wrongly).
    """
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.bm25_instances USING fts5vocab(main, chunks_fts, instance)")
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.bm25_terms USING fts5vocab(main, chunks_fts, row)")
    chunks = conn.execute("SELECT rowid, product FROM chunks ORDER BY rowid").fetchall()
    names = tuple(sorted({product for _, product in chunks}))
    code = {name: i for i, name in enumerate(names)}
    rowids = np.array([rowid for rowid, _ in chunks], dtype=np.int64)
    products = np.array([code[product] for _, product in chunks], dtype=np.int32)
    terms = conn.execute("SELECT term, doc, cnt FROM temp.bm25_terms").fetchall()
    # Every token instance's rowid, ordered by term then rowid: one string parsed by numpy, not 6M rows.
    (joined,) = conn.execute("SELECT group_concat(doc, ' ') FROM temp.bm25_instances").fetchone()
    instances = np.fromstring(joined or "", dtype=np.int64, sep=" ")
    counts = np.array([cnt for _, _, cnt in terms], dtype=np.int64)
    if int(counts.sum()) != len(instances):
        raise ValueError(f"fts5vocab lists {int(counts.sum())} token instances by term, {len(instances)} in all")
    docs = np.searchsorted(rowids, instances)
    if len(instances) and (docs.max() >= len(rowids) or (rowids[docs] != instances).any()):
        raise ValueError("chunks_fts indexes rows that are not in chunks")
    term_of = np.repeat(np.arange(len(terms), dtype=np.int64), counts)
    # A posting starts where the term or the document changes; its frequency is its run's length.
    first = np.ones(len(docs), dtype=bool)
    first[1:] = (term_of[1:] != term_of[:-1]) | (docs[1:] != docs[:-1])
    heads = np.flatnonzero(first)
    freqs = np.diff(np.append(heads, len(docs))).astype(np.float64)
    holding = np.bincount(term_of[heads], minlength=len(terms))
    expected = np.array([doc for _, doc, _ in terms], dtype=np.int64)
    if (holding != expected).any():
        raise ValueError("fts5vocab's instance and row tables disagree on how many rows hold a term")
    lengths = np.bincount(docs, minlength=len(rowids)).astype(np.float64)
    # No token at all: no row can match, and the norms are never read (FTS5 would divide 0 by 0 too).
    avgdl = float(len(instances)) / float(len(rowids)) if len(instances) else 1.0
    norms = K1 * ((1 - B) + (B * lengths) / avgdl)  # FTS5: k1 * (1 - b + b * D / avgdl), same operations
    docs = docs[heads]
    return Bm25Index(
        generation=generation,
        terms={term: i for i, (term, _, _) in enumerate(terms)},
        starts=np.concatenate(([0], np.cumsum(holding))).astype(np.int64),
        docs=docs.astype(np.int32),
        weights=(freqs * (K1 + 1.0)) / (freqs + norms[docs]),  # FTS5: (aFreq * (k1 + 1.0)) / (aFreq + norm)
        rowids=rowids,
        products=products,
        product_names=names,
    )


class QueryTokenizer:
    """Query words cut into tokens by FTS5's tokenizer ``tokenize`` (an in-memory FTS5 table), cached."""

    def __init__(self, tokenize: str) -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._conn.execute(f"CREATE VIRTUAL TABLE words USING fts5 (word, tokenize='{tokenize}')")
        self._conn.execute("CREATE VIRTUAL TABLE word_tokens USING fts5vocab(words, instance)")
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, ...]] = {}

    def tokens(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """Each word's tokens, in order (empty when FTS5 finds none in it)."""
        with self._lock:
            new = [w for w in dict.fromkeys(words) if w not in self._cache]
            if new:
                if len(self._cache) + len(new) > _CACHED_WORDS:
                    self._cache.clear()
                self._conn.execute("BEGIN")
                try:
                    self._conn.execute("DELETE FROM words")
                    self._conn.executemany("INSERT INTO words (rowid, word) VALUES (?, ?)", enumerate(new))
                    cut: dict[int, list[tuple[int, str]]] = {}
                    for term, doc, offset in self._conn.execute("SELECT term, doc, offset FROM word_tokens"):
                        cut.setdefault(doc, []).append((offset, term))
                finally:
                    self._conn.execute("ROLLBACK")
                for i, word in enumerate(new):
                    self._cache[word] = tuple(term for _, term in sorted(cut.get(i, [])))
            return [self._cache[w] for w in words]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
