"""Search latency at scale: hybrid search p50/p99 on the embedded store at 10k and 100k chunks, leg by leg.

For each size the same queries run, interleaved, through:

* ``bm25``   — ``store.bm25(text, k=candidates)``, the lexical leg;
* ``knn``    — ``store.knn(vector, k=candidates)`` with the query vector embedded beforehand, the vector leg;
* ``hybrid`` — ``embeddings.retrieval.hybrid_search`` (both legs concurrently, then reciprocal rank
  fusion) with the query vector precomputed: what the store and the fusion cost;
* ``hybrid + model`` — the same call embedding the query with the real model (no embedding cache);
* ``embed``  — the query embedding alone (the model's cost, not the store's);
* ``bm25 fts5`` and ``knn exact`` — the same legs on the same file opened with ``indexes=False``:
  FTS5's own ranking and the exact scan, side by side with the in-memory BM25 index and the sign-bit
  codes they are the reference of.

Quality, against that reference on every timed query: ``recall@10`` and ``recall@100`` of ``knn``
(the share of the exact scan's 10 / 100 nearest it returns), and ``bm25 = fts5``: the share of queries
whose BM25 hits (chunk, score, rank) equal FTS5's. ``build s``: the in-memory BM25 index's build and
the vectors' load (``store.warm()``) after opening the store.

Every call searches one product (``bench.docs``) of a store that also holds a second, 1%-sized
product (``bench.other``), as the service passes the readable products: the product filter is on the
measured path. The target (issue 9): ``hybrid`` p50 ≤ 20 ms at 100k chunks.

Data. Texts: SciFact's abstracts (BEIR layout, read from ``../shared/data/scifact``, never copied)
cut into 512/64-character chunks as an index run would (~19.7k chunks), repeated to the size; each
repeat drops a seeded 10% of the words, so posting lists grow with the size and copies are not
identical. Queries: SciFact's train claims. Without SciFact (``--synthetic``, or when the folder is
missing) texts and queries are Zipf-distributed pseudo-words. Vectors: embedding 100k chunks with
the real model takes hours on 2 cores, so ``--anchors`` chunks spread over the corpus are embedded
for real once, and chunk ``i`` gets anchor ``i % anchors`` plus Gaussian noise (cosine ≈ 0.95 to the
anchor), L2-normalised. Exact search costs the same on any vectors; the noise keeps ties away.

Cache: with ``--data-dir`` the anchor vectors and each built store are kept there and reused (a
100k store takes ~1 min to build); without it everything lives in a temporary folder.

    python bench/search_latency.py --data-dir /tmp/search-latency          # 10k and 100k, 200 queries
    python bench/search_latency.py --sizes 100000 --queries 500 --data-dir /tmp/search-latency
    python bench/search_latency.py --smoke                                  # 1.5k chunks: that it runs (CI)
    python bench/search_latency.py --check                                  # exit 1 when the target is missed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from connectors.search_base import Chunk, ChunkHit  # noqa: E402
from connectors.search_embedded import EmbeddedSearchStore  # noqa: E402
from embeddings.base import Embedder, Vectors, content_hash  # noqa: E402
from embeddings.chunking import chunk_text  # noqa: E402
from embeddings.models import DEFAULT_EMBEDDING_MODEL  # noqa: E402
from embeddings.retrieval import hybrid_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
PRODUCT, OTHER = "bench.docs", "bench.other"
TARGET_MS, TARGET_SIZE = 20.0, 100_000
LEGS = ("bm25", "knn", "hybrid", "hybrid + model", "embed", "bm25 fts5", "knn exact")
NOISE = 0.015  # per dimension: |noise| ≈ 0.3 for 384 dimensions, cosine to the anchor ≈ 0.95
console = Console(stderr=True)


@dataclass
class Corpus:
    kind: str  # "scifact" or "synthetic"
    texts: list[str]
    queries: list[str]


@dataclass
class Timings:
    size: int
    ms: dict[str, list[float]] = field(default_factory=lambda: {leg: [] for leg in LEGS})
    recall10: list[float] = field(default_factory=list)
    recall100: list[float] = field(default_factory=list)
    bm25_equal: list[bool] = field(default_factory=list)
    build_s: float = 0.0


class PrecomputedEmbedder(Embedder):
    """Answers the benchmark's queries with vectors embedded beforehand: ``hybrid`` without the model's cost."""

    def __init__(self, model_id: str, vectors: dict[str, Vectors]) -> None:
        super().__init__(cache_size=0)
        self.model_id, self._vectors = model_id, vectors
        self.dimensions = len(next(iter(vectors.values())))

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._vectors[t] for t in texts])


class UncachedEmbedder(Embedder):
    """The real model without the embedding cache: every query pays its embedding."""

    def __init__(self, model: Embedder) -> None:
        super().__init__(cache_size=0)
        self.model, self.model_id, self.dimensions = model, model.model_id, model.dimensions

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        return self.model.embed_batch(texts)


def load_corpus(data: Path, *, synthetic: bool, max_texts: int | None) -> Corpus:
    """SciFact's chunks and claims, or Zipf pseudo-words when ``synthetic`` or SciFact is missing."""
    if not synthetic and (data / "corpus.jsonl").is_file():
        texts: list[str] = []
        with (data / "corpus.jsonl").open(encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                texts += chunk_text(f"{doc.get('title', '')} {doc['text']}".strip(), 512, 64)
                if max_texts is not None and len(texts) >= max_texts:
                    break
        with (data / "queries-train.jsonl").open(encoding="utf-8") as lines:
            queries = [json.loads(line)["text"] for line in lines]
        return Corpus("scifact", texts[:max_texts], queries)
    if not synthetic:
        console.print(f"[yellow]no SciFact at {data}: synthetic texts[/]")
    rng = np.random.default_rng(7)
    vocabulary = [f"w{i:05d}{chr(97 + i % 26)}" for i in range(30_000)]
    ranks = rng.zipf(1.2, size=(max_texts or 20_000) * 80) % len(vocabulary)
    words = [vocabulary[r] for r in ranks]
    texts = [" ".join(words[i * 80 : (i + 1) * 80]) for i in range(max_texts or 20_000)]
    queries = [" ".join(vocabulary[r] for r in rng.zipf(1.2, size=8) % len(vocabulary)) for _ in range(1000)]
    return Corpus("synthetic", texts, queries)


def open_embedder(model: str, models_dir: Path | None) -> Embedder:
    from embeddings.llamacpp import LlamaCppEmbedder
    from embeddings.models import resolve_model

    return LlamaCppEmbedder(resolve_model(model, models_dir))


def anchor_vectors(corpus: Corpus, embedder: Embedder, count: int, cache: Path) -> Vectors:
    """``count`` chunks spread over the corpus, embedded for real (cached in ``cache`` by content)."""
    picks = [corpus.texts[i] for i in np.linspace(0, len(corpus.texts) - 1, count).astype(int)]
    digest = content_hash(embedder.model_id + "\x00" + "\x00".join(picks))[:16]
    path = cache / f"anchors-{corpus.kind}-{count}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    console.print(f"embedding {count} anchor chunks with {embedder.model_id} (once; cached in {path.parent})")
    started = time.perf_counter()
    vectors = embedder.embed_many(picks)
    console.print(f"  {time.perf_counter() - started:.1f} s")
    np.save(path, vectors)
    return vectors


def perturbed(text: str, copy: int, seed: int) -> str:
    """Copy 0 is the text; later copies drop a seeded 10% of its words."""
    if copy == 0:
        return text
    words = text.split()
    keep = np.random.default_rng(seed).random(len(words)) >= 0.1
    return " ".join(w for w, k in zip(words, keep, strict=True) if k) or text


def synthetic_chunks(
    product: str, corpus: Corpus, anchors: Vectors, size: int, offset: int
) -> tuple[list[Chunk], Vectors]:
    rng = np.random.default_rng(size + offset)
    n = len(corpus.texts)
    chunks = []
    for i in range(offset, offset + size):
        text = perturbed(corpus.texts[i % n], i // n, i)
        chunks.append(Chunk(product=product, key={"id": i}, field="text", chunk=0, text=text, content_hash=str(i)))
    vectors = anchors[np.arange(offset, offset + size) % len(anchors)] + rng.normal(0, NOISE, (size, anchors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors.astype(np.float32)


async def built_store(corpus: Corpus, anchors: Vectors, model_id: str, size: int, folder: Path) -> EmbeddedSearchStore:
    """The store of ``size`` chunks of :data:`PRODUCT` (plus 1% of :data:`OTHER`), built unless cached."""
    store = EmbeddedSearchStore(folder / f"store-{corpus.kind}-{size}.db")
    other = max(1, size // 100)
    if len(await store.indexed(PRODUCT)) == size and len(await store.indexed(OTHER)) == other:
        return store
    console.print(f"building a {size:,}-chunk store in {store.path}")
    started = time.perf_counter()
    for product, count, offset in ((PRODUCT, size, 0), (OTHER, other, size)):
        await store.drop(product)
        chunks, vectors = synthetic_chunks(product, corpus, anchors, count, offset)
        await store.apply(product, chunks, vectors, [], model_id=model_id)
    console.print(f"  {time.perf_counter() - started:.1f} s")
    return store


async def timed(ms: list[float], call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    result = await call(*args, **kwargs)
    ms.append((time.perf_counter() - started) * 1000)
    return result


def recall(found: list[ChunkHit], exact: list[ChunkHit], k: int) -> float:
    expected = {h.id for h in exact[:k]}
    return len(expected & {h.id for h in found[:k]}) / len(expected) if expected else 1.0


async def measure(
    store: EmbeddedSearchStore,
    model: Embedder,
    queries: list[str],
    vectors: dict[str, Vectors],
    args: argparse.Namespace,
) -> Timings:
    timings = Timings(size=len(await store.indexed(PRODUCT)))
    precomputed, uncached = PrecomputedEmbedder(model.model_id, vectors), UncachedEmbedder(model)
    search = {"k": args.k, "products": [PRODUCT], "candidates": args.candidates}
    leg = {"k": args.candidates, "products": [PRODUCT]}
    started = time.perf_counter()
    await store.warm()  # the BM25 index builds, the vectors load
    timings.build_s = time.perf_counter() - started
    async with EmbeddedSearchStore(store.path, indexes=False) as reference:
        await reference.warm()
        for query in queries[:3]:  # warm: pages come into memory
            await hybrid_search(store, precomputed, query, **search)
            await reference.bm25(query, **leg)
        ms = timings.ms
        for query in queries:
            lexical = await timed(ms["bm25"], store.bm25, query, **leg)
            nearest = await timed(ms["knn"], store.knn, vectors[query], **leg)
            await timed(ms["hybrid"], hybrid_search, store, precomputed, query, **search)
            await timed(ms["hybrid + model"], hybrid_search, store, uncached, query, **search)
            await timed(ms["embed"], anyio.to_thread.run_sync, model.embed_batch, [query])
            fts5 = await timed(ms["bm25 fts5"], reference.bm25, query, **leg)
            exact = await timed(ms["knn exact"], reference.knn, vectors[query], **leg)
            timings.bm25_equal.append(lexical == fts5)
            timings.recall10.append(recall(nearest, exact, 10))
            timings.recall100.append(recall(nearest, exact, args.candidates))
    return timings


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(results: list[Timings], corpus: Corpus, args: argparse.Namespace) -> bool:
    """Print the table (stdout); True when every measured target is met."""
    table = Table(
        title=f"Search latency, embedded store ({corpus.kind} texts, {len(args.query_texts)} queries, "
        f"k={args.k}, {args.candidates} candidates per leg), ms"
    )
    quality = ("recall@10", f"recall@{args.candidates}", "bm25 = fts5", "build s")
    for name in ("chunks", *(f"{leg} p50/p99" for leg in LEGS), *quality, "target: hybrid p50"):
        table.add_column(name, justify="right")
    met = True
    for t in results:
        cells = [f"{percentile(t.ms[leg], 50):.2f} / {percentile(t.ms[leg], 99):.2f}" for leg in LEGS]
        hybrid = percentile(t.ms["hybrid"], 50)
        if t.size >= TARGET_SIZE:
            verdict = "[green]met[/]" if hybrid <= TARGET_MS else "[red]missed[/]"
            met = met and hybrid <= TARGET_MS
        else:
            verdict = "-"
        measured = (
            f"{np.mean(t.recall10):.3f}",
            f"{np.mean(t.recall100):.3f}",
            f"{np.mean(t.bm25_equal):.3f}",
            f"{t.build_s:.1f}",
        )
        table.add_row(f"{t.size:,}", *cells, *measured, f"≤ {TARGET_MS:.0f} at {TARGET_SIZE // 1000}k: {verdict}")
    out = Console()
    if not out.is_terminal:
        out = Console(width=280)
    out.print(table)
    return met


async def run_bench(args: argparse.Namespace, folder: Path) -> tuple[list[Timings], Corpus]:
    corpus = load_corpus(args.data, synthetic=args.synthetic, max_texts=args.max_texts)
    model = open_embedder(args.model, args.models_dir)
    try:
        anchors = anchor_vectors(corpus, model, min(args.anchors, len(corpus.texts)), folder)
        args.query_texts = list(dict.fromkeys(corpus.queries))[: args.queries]
        vectors = dict(zip(args.query_texts, model.embed_many(args.query_texts), strict=True))
        results = []
        for size in args.sizes:
            async with await built_store(corpus, anchors, model.model_id, size, folder) as store:
                console.print(f"measuring {size:,} chunks")
                results.append(await measure(store, model, args.query_texts, vectors, args))
    finally:
        model.close()
    return results, corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="chunks per store, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (default 200)")
    parser.add_argument("--k", type=int, default=10, help="results per hybrid call (default 10)")
    parser.add_argument("--candidates", type=int, default=100, help="hits per leg, as hybrid_search (default 100)")
    parser.add_argument("--anchors", type=int, default=1000, help="chunks embedded for real (default 1000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SciFact in BEIR layout")
    parser.add_argument("--synthetic", action="store_true", help="Zipf pseudo-words instead of SciFact")
    parser.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL, help="built embedding model")
    parser.add_argument("--models-dir", type=Path, default=None, help="where built models live")
    parser.add_argument("--data-dir", type=Path, help="keep anchor vectors and built stores here for reruns")
    parser.add_argument("--smoke", action="store_true", help="1.5k chunks, 20 queries, 20 anchors: that it runs")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    args.max_texts = None
    if args.smoke:
        args.sizes, args.queries, args.anchors, args.max_texts = "1500", 20, 20, 1000
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes takes comma-separated chunk counts, e.g. 10000,100000, not {args.sizes!r}")
    if min(args.sizes) < 1 or args.queries < 1 or args.k < 1 or args.candidates < 1 or args.anchors < 1:
        parser.error("--sizes, --queries, --k, --candidates and --anchors must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="dp-search-latency-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        results, corpus = anyio.run(run_bench, args, folder)
    finally:
        if args.data_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    met = report(results, corpus, args)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
