"""``LlamaCppEmbedder``: sentence embeddings from a GGUF model through llama.cpp (llama-cpp-python, low-level API).

Texts are tokenised by the model's own tokenizer and cut to ``max_tokens`` (the cut keeps the closing
separator and is counted in ``truncated``). Many sequences share one llama.cpp batch: inputs are sorted by
token count and packed into batches of at most ``batch_tokens`` tokens, each sequence with its own id, and
llama.cpp mean-pools per sequence. ``contexts`` > 1 runs that many single-threaded contexts over one model in
parallel threads (llama.cpp releases the GIL). Vectors come back L2-normalised float32.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from catalog.errors import EmbeddingError
from embeddings._cpu_backend import CpuBackend, load_cpu_backend, probe_model_for
from embeddings.base import Embedder, Vectors
from embeddings.models import card_for
from embeddings.quantize import import_llama_cpp

__all__ = ["CpuBackend", "LlamaCppEmbedder", "load_cpu_backend_for"]


def load_cpu_backend_for(model_path: Path | None = None) -> CpuBackend:
    """Choose and load llama.cpp's CPU backend variant (probed once per machine and build), and say which.

    Every model load calls this first; the first call in a process decides (see :mod:`embeddings._cpu_backend`).

    Raises:
        EmbeddingError: llama-cpp-python is missing, or no CPU backend variant runs on this machine.
    """
    return load_cpu_backend(import_llama_cpp(), probe_model_for(model_path))


class _Context:
    """One llama.cpp context and its batch; used by one thread at a time."""

    def __init__(self, llama_cpp: Any, model: Any, *, n_tokens: int, n_seq: int, n_threads: int, flash: bool) -> None:
        self._lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_tokens
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = n_threads
        params.embeddings = True
        params.kv_unified = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise EmbeddingError("llama.cpp could not create a context for the embedding model")
        self.batch = batch = llama_cpp.llama_batch_init(n_tokens, 0, 1)
        # The batch's arrays as numpy views, filled by slices (a per-token Python loop cost more than the model).
        self._tokens = np.ctypeslib.as_array(batch.token, shape=(n_tokens,))
        self._pos = np.ctypeslib.as_array(batch.pos, shape=(n_tokens,))
        np.ctypeslib.as_array(batch.n_seq_id, shape=(n_tokens,))[:] = 1
        np.ctypeslib.as_array(batch.logits, shape=(n_tokens,))[:] = 1  # every token's output is pooled
        # Each token's one sequence id lives in a separate malloc'd slot: point them into one array of ours
        # (the original pointers go back before llama_batch_free frees them).
        self._seq = np.zeros(n_tokens, dtype=np.int32)
        slot = ctypes.POINTER(ctypes.c_int32)
        self._own_seq_ids = [ctypes.cast(batch.seq_id[j], ctypes.c_void_p).value for j in range(n_tokens)]
        for j in range(n_tokens):
            batch.seq_id[j] = ctypes.cast(self._seq.ctypes.data + 4 * j, slot)
        self._positions = np.arange(n_tokens, dtype=np.int32)

    def encode(self, sequences: Sequence[Sequence[int]], n_embd: int) -> Vectors:
        """Pooled vectors of sequences that fit one batch together."""
        lib, batch = self._lib, self.batch
        lengths = np.fromiter((len(tokens) for tokens in sequences), dtype=np.int64, count=len(sequences))
        n = int(lengths.sum())
        self._tokens[:n] = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=n)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        self._pos[:n] = self._positions[:n] - starts
        self._seq[:n] = np.repeat(np.arange(len(sequences), dtype=np.int32), lengths)
        batch.n_tokens = n
        status = lib.llama_encode(self.ctx, batch)
        if status != 0:
            raise EmbeddingError(f"llama.cpp failed to embed a batch of {len(sequences)} texts (status {status})")
        out = np.empty((len(sequences), n_embd), dtype=np.float32)
        for seq in range(len(sequences)):
            ptr = lib.llama_get_embeddings_seq(self.ctx, seq)
            if not ptr:
                raise EmbeddingError("llama.cpp returned no pooled embedding: is this a GGUF embedding model?")
            out[seq] = np.ctypeslib.as_array(ptr, shape=(n_embd,))
        return out

    def close(self) -> None:
        if self.ctx:
            for j, own in enumerate(self._own_seq_ids):
                self.batch.seq_id[j] = ctypes.cast(ctypes.c_void_p(own), ctypes.POINTER(ctypes.c_int32))
            self._lib.llama_batch_free(self.batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None


class LlamaCppEmbedder(Embedder):
    """A GGUF embedding model (BERT family, mean pooling) run by llama.cpp on the CPU.

    ``batch_tokens`` bounds the tokens of one llama.cpp batch (and its attention, which spans the whole
    batch); ``contexts`` parallel contexts share ``n_threads`` threads between them. The defaults are what
    measured fastest on 2 cores (bench/embed_throughput.py --sweep): 512-token batches, flash attention, one
    single-threaded context per thread (llama.cpp's OpenMP threads spin at each op's barrier, which costs
    2-3x as soon as another process wants the cores).
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        n_threads: int | None = None,
        max_tokens: int = 256,
        batch_tokens: int = 512,
        max_sequences: int = 64,
        contexts: int | None = None,
        flash_attn: bool = True,
        model_id: str | None = None,
        cache_size: int = 50_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.model_path = Path(model_path)
        card = card_for(self.model_path) if self.model_path.suffix == ".gguf" else None
        self.model_id = model_id or (card.name if card else self.model_path.stem)
        self._dimensions = card.dimensions if card and card.dimensions else None
        self.max_tokens = max_tokens
        self.batch_tokens = max(batch_tokens, max_tokens)
        self.max_sequences = max_sequences
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_contexts = max(1, contexts or self.n_threads)
        self.flash_attn = flash_attn
        self.tokens_embedded = 0
        self._lib: Any = None
        self._model: Any = None
        self._vocab: Any = None
        self._contexts: list[_Context] = []
        self._pool: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[_Context] = queue.SimpleQueue()
        self._load_lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        """Width of the vectors (read from the card, else from the model, loading it)."""
        if self._dimensions is None:
            self._load()
        assert self._dimensions is not None
        return self._dimensions

    @dimensions.setter
    def dimensions(self, value: int) -> None:
        self._dimensions = value

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            if not self.model_path.is_file():
                raise EmbeddingError(
                    f"GGUF model file {self.model_path} does not exist; run `dataproducts models build`"
                )
            lib = import_llama_cpp()
            load_cpu_backend_for(self.model_path)
            lib.llama_backend_init()
            params = lib.llama_model_default_params()
            params.n_gpu_layers = 0
            model = lib.llama_model_load_from_file(str(self.model_path).encode(), params)
            if not model:
                raise EmbeddingError(
                    f"llama.cpp could not load the embedding model {self.model_path} (damaged, not a GGUF model, or"
                    " unsupported); rebuild it with `dataproducts models build`, or set models.embedding to a"
                    " working GGUF embedding model"
                )
            self._lib, self._model = lib, model
            self._vocab = lib.llama_model_get_vocab(model)
            self._dimensions = int(lib.llama_model_n_embd(model))
            self.max_tokens = min(self.max_tokens, int(lib.llama_model_n_ctx_train(model)))
            self._sep = int(lib.llama_vocab_sep(self._vocab))
            n_seq = min(self.max_sequences, int(lib.llama_max_parallel_sequences()))
            threads = max(1, self.n_threads // self.n_contexts)
            try:
                self._contexts = [
                    _Context(
                        lib, model, n_tokens=self.batch_tokens, n_seq=n_seq, n_threads=threads, flash=self.flash_attn
                    )
                    for _ in range(self.n_contexts)
                ]
            except EmbeddingError:
                self.close()
                raise
            self.max_sequences = n_seq
            for context in self._contexts:
                self._idle.put(context)
            if self.n_contexts > 1:
                self._pool = ThreadPoolExecutor(self.n_contexts, thread_name_prefix="llamacpp-embed")

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of ``text`` with its special tokens, cut to ``max_tokens`` (counted in ``truncated``)."""
        if self._model is None:
            self._load()
        data = text.encode("utf-8", errors="replace")
        capacity = len(data) + 8
        buf = (ctypes.c_int32 * capacity)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, True, False)
        if n < 0:
            capacity = -n
            buf = (ctypes.c_int32 * capacity)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, True, False)
        if n < 0:
            raise EmbeddingError("llama.cpp could not tokenize a text")
        tokens = buf[:n]
        if n > self.max_tokens:
            self.truncated += 1
            tokens = tokens[: self.max_tokens - 1] + [tokens[-1] if tokens[-1] == self._sep else self._sep]
        return tokens

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices of the inputs grouped into llama.cpp batches, shortest inputs first."""
        batches: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if current and (used + lengths[i] > self.batch_tokens or len(current) >= self.max_sequences):
                batches.append(current)
                current, used = [], 0
            current.append(i)
            used += lengths[i]
        if current:
            batches.append(current)
        return batches

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Embed texts with llama.cpp: ``(len(texts), dimensions)`` float32, rows L2-normalised.

        Raises:
            EmbeddingError: llama-cpp-python is missing, the model cannot be loaded, or llama.cpp fails.
        """
        if self._model is None:
            self._load()
        tokens = [self.tokenize(t) for t in texts]
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        batches = self._batches([len(t) for t in tokens])

        def run(members: list[int]) -> None:
            context = self._idle.get()
            try:
                out[members] = context.encode([tokens[i] for i in members], self.dimensions)
            finally:
                self._idle.put(context)

        if self._pool is not None and len(batches) > 1:
            list(self._pool.map(run, batches))
        else:
            for members in batches:
                run(members)
        self.tokens_embedded += sum(len(t) for t in tokens)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the contexts and the model. Idempotent."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for context in self._contexts:
            context.close()
        self._contexts = []
        self._idle = queue.SimpleQueue()
        if self._model is not None:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass
