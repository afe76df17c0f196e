"""Retrieval quality on SciFact (BEIR layout, train split): nDCG@10 and recall@100 of BM25, dense and hybrid.

The 5,183 abstracts are indexed into the embedded search store (and Elasticsearch when ``--es-url``
or ``DATAPRODUCTS_ES_URL`` is set), one product per model, written with one ``apply`` like an index
run; the 809 train claims are the queries. For each store and model it reports:

* ``bm25``   — the store's BM25 ranking (the same for every model, so reported once per store);
* ``dense``  — cosine kNN over the model's vectors;
* ``hybrid`` — both fused by reciprocal rank fusion (``embeddings.retrieval.reciprocal_rank_fusion``,
  k = 60) over the top ``--candidates`` of each, exactly as ``hybrid_search`` does, then one hit per
  document (``embeddings.retrieval.group_by_row``), as ``search_documents`` answers by default;
* ``hybrid-chunks`` — the documents among the 10 best fused chunks, as ``search_documents`` answers
  with ``chunks: true`` (with ``--chunk-size``, a document may fill several of the 10 hits).

"docs in 10 hits" is the mean number of distinct documents among the first 10 hits of each mode.

Documents: title and abstract joined by a space (as BEIR's dense evaluation does) form ONE chunk per
document by default (``--chunk-size 0``): abstracts run to 10,000 characters (median 1,400), and
the model reads only its first ``max_tokens`` (256, as sentence-transformers does for this model),
so a long abstract's tail is cut — counted and printed as "truncated". With ``--chunk-size N`` the
documents are split by ``embeddings.chunking`` and a document scores as its best chunk
(max-pooling: the first time a document appears in a chunk ranking is its rank).

Metrics: ``bench/_metrics.py`` (BEIR / trec_eval definitions, graded relevance from the qrels).
The data stay where they are (default ``../shared/data/scifact`` beside the checkout).

    python bench/retrieval_eval.py --models all-minilm-l6-v2-f32,all-minilm-l6-v2-q8_0,all-minilm-l6-v2-q4_k_m
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._metrics import mean_metric  # noqa: E402
from connectors.search_base import Chunk, ChunkHit, SearchStore  # noqa: E402
from embeddings.base import Embedder, Vectors, content_hash  # noqa: E402
from embeddings.chunking import chunk_text  # noqa: E402
from embeddings.retrieval import RRF_K, group_by_row, reciprocal_rank_fusion  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
MODES = ("bm25", "dense", "hybrid", "hybrid-chunks")
#: The hits an agent asks search_documents for, and how many distinct documents they hold.
AGENT_K = 10
console = Console()


@dataclass
class Collection:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class Result:
    store: str
    model: str
    mode: str
    ndcg10: float
    recall100: float
    index_s: float
    query_ms: float
    truncated: int
    distinct10: float = 0.0


def load_collection(folder: Path, *, max_queries: int | None = None, max_docs: int | None = None) -> Collection:
    """Corpus, train queries and qrels of a BEIR folder (only judged queries are kept).

    ``max_docs`` shrinks the corpus (a quick run): the documents judged for the kept queries stay, and
    the first other documents fill up to ``max_docs``.

    Raises:
        FileNotFoundError: the folder lacks corpus.jsonl, queries-train.jsonl or qrels-train.tsv.
    """
    corpus: dict[str, str] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = f"{doc.get('title', '')} {doc['text']}".strip()
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels-train.tsv").open(encoding="utf-8") as lines:
        next(lines)  # header
        for line in lines:
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    queries: dict[str, str] = {}
    with (folder / "queries-train.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            query = json.loads(line)
            if str(query["_id"]) in qrels:
                queries[str(query["_id"])] = query["text"]
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
    if max_docs is not None:  # every judged document of the queries kept, then the first others
        judged = {d for q in queries for d in qrels[q]}
        kept = judged | set([d for d in corpus if d not in judged][: max(0, max_docs - len(judged))])
        corpus = {d: t for d, t in corpus.items() if d in kept}
    return Collection(corpus, queries, {q: qrels[q] for q in queries})


def open_store(kind: str, workdir: Path, es_url: str | None) -> SearchStore:
    """A fresh search store of ``kind`` (``embedded`` or ``elasticsearch``)."""
    if kind == "embedded":
        from connectors.search_embedded import EmbeddedSearchStore

        return EmbeddedSearchStore(workdir / f"search-{time.monotonic_ns()}.db")
    from connectors.search_elasticsearch import ElasticsearchSearchStore

    if not es_url:
        raise ValueError("the elasticsearch store needs --es-url or DATAPRODUCTS_ES_URL")
    return ElasticsearchSearchStore(es_url, index_prefix="dataproducts-bench")


def open_embedder(model: str, models_dir: Path | None) -> Embedder:
    from embeddings.llamacpp import LlamaCppEmbedder
    from embeddings.models import resolve_model

    return LlamaCppEmbedder(resolve_model(model, models_dir))


def doc_ranking(hits: list[ChunkHit]) -> list[str]:
    """Document ids in order of their best chunk (max-pooling over chunks)."""
    return list(dict.fromkeys(str(h.key["id"]) for h in hits))


async def _embed(embedder: Embedder, texts: list[str], label: str) -> tuple[Vectors, float]:
    started = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(label, total=len(texts))
        advance: Callable[[int], None] = lambda n: bar.advance(task, n)  # noqa: E731
        vectors = await anyio.to_thread.run_sync(lambda: embedder.embed_many(texts, progress=advance))
    return vectors, time.perf_counter() - started


async def evaluate(
    store_kind: str, model: str, data: Collection, args: argparse.Namespace, workdir: Path
) -> list[Result]:
    """Index the corpus with ``model`` into a fresh store and score the three modes."""
    embedder = open_embedder(model, args.models_dir)
    product = "bench.scifact"
    chunks: list[Chunk] = []
    for doc_id, text in data.corpus.items():
        pieces = chunk_text(text, args.chunk_size, args.chunk_overlap) if args.chunk_size else [text]
        digest = content_hash(text)
        chunks += [
            Chunk(product=product, key={"id": doc_id}, field="text", chunk=i, text=t, content_hash=digest)
            for i, t in enumerate(pieces)
        ]
    vectors, index_s = await _embed(embedder, [c.text for c in chunks], f"{model}: {len(chunks)} chunks")
    truncated = embedder.truncated
    runs: dict[str, dict[str, list[str]]] = {mode: {} for mode in MODES}
    timings: list[float] = []
    async with open_store(store_kind, workdir, args.es_url) as store:
        await store.drop(product)
        await store.apply(product, chunks, vectors, [], model_id=embedder.model_id)
        query_ids = list(data.queries)
        query_vectors, _ = await _embed(embedder, [data.queries[q] for q in query_ids], f"{model}: queries")
        depth = args.candidates * (4 if args.chunk_size else 1)
        for query_id, vector in zip(query_ids, query_vectors, strict=True):
            started = time.perf_counter()
            bm25 = await store.bm25(data.queries[query_id], k=depth, products=[product])
            dense = await store.knn(vector, k=depth, products=[product])
            timings.append(time.perf_counter() - started)
            fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, rrf_k=args.rrf_k)
            runs["bm25"][query_id] = doc_ranking(bm25)
            runs["dense"][query_id] = doc_ranking(dense)
            runs["hybrid"][query_id] = [str(h.key["id"]) for h in group_by_row(fused)]  # search_documents' default
            runs["hybrid-chunks"][query_id] = doc_ranking(fused[:AGENT_K])  # chunks=true: the k best chunks
        await store.drop(product)
    embedder.close()
    query_ms = statistics.median(timings) * 1000 if timings else 0.0
    return [
        Result(
            store_kind,
            model,
            mode,
            mean_metric(runs[mode], data.qrels, "ndcg", 10),
            mean_metric(runs[mode], data.qrels, "recall", 100),
            index_s,
            query_ms,
            truncated,
            statistics.mean(len(ranking[:AGENT_K]) for ranking in runs[mode].values()) if runs[mode] else 0.0,
        )
        for mode in MODES
    ]


def report(results: list[Result], queries: int) -> None:
    table = Table(title=f"SciFact train ({queries} judged claims): retrieval quality")
    for name in (
        "store",
        "model",
        "mode",
        "nDCG@10",
        "recall@100",
        "embed s",
        "query ms (bm25+knn, median)",
        "truncated",
        f"docs in {AGENT_K} hits",
    ):
        table.add_column(name, justify="left" if name in ("store", "model", "mode") else "right")
    shown_bm25: set[str] = set()
    for r in results:
        if r.mode == "bm25":
            if r.store in shown_bm25:
                continue
            shown_bm25.add(r.store)
        model = "—" if r.mode == "bm25" else r.model
        table.add_row(
            r.store,
            model,
            r.mode,
            f"{r.ndcg10:.4f}",
            f"{r.recall100:.4f}",
            f"{r.index_s:.1f}",
            f"{r.query_ms:.1f}",
            str(r.truncated),
            f"{r.distinct10:.2f}",
        )
    console.print(table)
    for store in dict.fromkeys(r.store for r in results):
        by = {(r.model, r.mode): r for r in results if r.store == store}
        for model in dict.fromkeys(m for m, _ in by):
            hybrid, dense, bm25 = by[(model, "hybrid")], by[(model, "dense")], by[(model, "bm25")]
            chunks = by[(model, "hybrid-chunks")]
            console.print(
                f"{store} {model}: {AGENT_K} hits per row (default) nDCG@10 {hybrid.ndcg10:.4f}, "
                f"{hybrid.distinct10:.2f} documents; {AGENT_K} raw chunks nDCG@10 {chunks.ndcg10:.4f}, "
                f"{chunks.distinct10:.2f} documents"
            )
            verdict = "above both" if hybrid.ndcg10 > max(dense.ndcg10, bm25.ndcg10) else "NOT above both"
            console.print(
                f"{store} {model}: hybrid nDCG@10 {hybrid.ndcg10:.4f} is {verdict} "
                f"(bm25 {bm25.ndcg10:.4f}, dense {dense.ndcg10:.4f})"
            )
        reference = next((m for m, _ in by if m.endswith("-f32")), None)
        for model in dict.fromkeys(m for m, _ in by):
            if reference and model != reference:
                delta = by[(model, "dense")].ndcg10 - by[(reference, "dense")].ndcg10
                console.print(f"{store} {model}: dense nDCG@10 {delta:+.4f} against {reference}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (default: %(default)s)")
    parser.add_argument("--models", default="all-minilm-l6-v2-q8_0", help="comma-separated model names or GGUF paths")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: $DATAPRODUCTS_MODELS_DIR or ~/.cache")
    parser.add_argument("--es-url", default=os.environ.get("DATAPRODUCTS_ES_URL"), help="also evaluate Elasticsearch")
    parser.add_argument("--chunk-size", type=int, default=0, help="0: one chunk per document (default)")
    parser.add_argument("--chunk-overlap", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=100, help="depth of each ranking fused by hybrid")
    parser.add_argument("--rrf-k", type=int, default=RRF_K)
    parser.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N judged queries")
    parser.add_argument("--max-docs", type=int, default=None, help="a smaller corpus: judged documents first")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "corpus.jsonl").is_file():
        console.print(f"[red]no BEIR collection at {args.data}[/red]; pass --data")
        return 2
    data = load_collection(args.data, max_queries=args.max_queries, max_docs=args.max_docs)
    console.print(f"{len(data.corpus)} documents, {len(data.queries)} judged queries from {args.data}")
    stores = ["embedded"] + (["elasticsearch"] if args.es_url else [])
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dp-retrieval-eval-") as tmp:
        for store in stores:
            for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                done = anyio.run(evaluate, store, model, data, args, Path(tmp))
                figures = ", ".join(f"{r.mode} {r.ndcg10:.4f}/{r.recall100:.4f}" for r in done)
                console.print(
                    f"{store} {model} (nDCG@10/recall@100): {figures}; embedding took {done[0].index_s:.0f} s"
                )
                results += done
    report(results, len(data.queries))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
