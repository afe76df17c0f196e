"""LlamaCppEmbedder on the real Q8_0 all-MiniLM-L6-v2 model (so a build that cannot run here never lands)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from catalog.errors import EmbeddingError
from embeddings.base import Vectors
from embeddings.llamacpp import LlamaCppEmbedder

TEXTS = [
    "Customer orders, one row per order line.",
    "Gross revenue in EUR per day and region.",
    "A cat sat on the warm windowsill and watched the rain.",
    "Vitamin D supplementation did not reduce the risk of fractures in older adults.",
    "",
    "42",
    "Mitochondrial DNA mutations accumulate with age in human tissues. " * 12,
]


@pytest.fixture(scope="module")
def embedder(embedding_model_path: Path) -> Iterator[LlamaCppEmbedder]:
    embedder = LlamaCppEmbedder(embedding_model_path)
    yield embedder
    embedder.close()


def test_q8_model_embeds_normalised_float32_vectors(embedder: LlamaCppEmbedder) -> None:
    vectors = embedder.embed_many(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(vectors).all()


def test_model_id_and_dimensions_come_from_the_card(embedder: LlamaCppEmbedder) -> None:
    assert embedder.model_id == "all-minilm-l6-v2-q8_0"
    assert embedder.dimensions == 384


def test_similar_sentences_are_closer_than_unrelated_ones(embedder: LlamaCppEmbedder) -> None:
    query, similar, unrelated = embedder.embed_many(
        ["How much money did we make from sales last month?", "Monthly sales revenue", "The cat sleeps on the sofa"]
    )
    assert float(query @ similar) > float(query @ unrelated) + 0.2


def test_over_long_input_is_truncated_and_counted(embedding_model_path: Path) -> None:
    embedder = LlamaCppEmbedder(embedding_model_path, max_tokens=256)
    try:
        long_text = "word " * 600
        tokens = embedder.tokenize(long_text)
        assert len(tokens) == 256
        assert tokens[0] == 101 and tokens[-1] == 102  # [CLS] ... [SEP] survive the cut
        assert embedder.truncated == 1
        head, long = embedder.embed_batch(["word " * 254, long_text])  # 254 words + 2 specials = the cut input
        assert embedder.truncated == 2
        assert float(head @ long) > 0.9999
        embedder.embed_batch(["short text"])
        assert embedder.truncated == 2
    finally:
        embedder.close()


def test_batching_gives_the_same_vectors_as_one_by_one(embedder: LlamaCppEmbedder) -> None:
    together = embedder.embed_batch(TEXTS)
    alone = np.stack([embedder.embed_batch([t])[0] for t in TEXTS])
    assert np.min(np.sum(together * alone, axis=1)) >= 0.999


def test_small_batches_and_parallel_contexts_give_the_same_vectors(
    embedder: LlamaCppEmbedder, embedding_model_path: Path
) -> None:
    texts = [f"{t} ({i})" for i in range(6) for t in TEXTS]
    expected = embedder.embed_batch(texts)
    parallel = LlamaCppEmbedder(embedding_model_path, contexts=2, batch_tokens=256, flash_attn=False)
    try:
        got = parallel.embed_batch(texts)
    finally:
        parallel.close()
    assert np.min(np.sum(expected * got, axis=1)) >= 0.999


class CountingEmbedder(LlamaCppEmbedder):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.embedded: list[str] = []

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.embedded.extend(texts)
        return super().embed_batch(texts)


def test_the_cache_avoids_re_embedding_unchanged_text(embedding_model_path: Path) -> None:
    embedder = CountingEmbedder(embedding_model_path)
    try:
        first = embedder.embed_many(["alpha", "beta", "alpha"])
        again = embedder.embed_many(["beta", "gamma", "alpha"])
    finally:
        embedder.close()
    assert embedder.embedded == ["alpha", "beta", "gamma"]
    np.testing.assert_array_equal(first[0], again[2])
    np.testing.assert_array_equal(first[1], again[0])


def test_a_missing_model_file_says_which_command_builds_it(tmp_path: Path) -> None:
    embedder = LlamaCppEmbedder(tmp_path / "absent.gguf")
    with pytest.raises(EmbeddingError, match="dataproducts models build"):
        embedder.embed("hello")


def test_a_file_that_is_not_gguf_is_an_embedding_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all" * 100)
    with pytest.raises(EmbeddingError, match="could not load"):
        LlamaCppEmbedder(bogus).embed("hello")
