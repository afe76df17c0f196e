"""The vector leg's sign-bit scan with an exact re-rank: recall@10 against the exact scan, exact scores."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors._vector_quant import QUANTIZE_MIN_DIMENSIONS, QUANTIZE_MIN_ROWS, SignCodes, nearest
from connectors.search_base import Chunk
from connectors.search_embedded import EmbeddedSearchStore


def embedding_like(rows: int, dimensions: int, seed: int) -> npt.NDArray[np.float32]:
    """Unit vectors in one narrow cone (as embedding models make them), around 300 topics of varied spread."""
    rng = np.random.default_rng(seed)
    cone = rng.normal(size=dimensions)
    topics = rng.normal(size=(300, dimensions)) + 2.0 * cone / np.linalg.norm(cone) * np.sqrt(dimensions)
    spread = rng.uniform(0.3, 1.2, size=300)
    which = rng.integers(0, 300, size=rows)
    matrix = topics[which] + rng.normal(size=(rows, dimensions)) * spread[which, np.newaxis]
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def exact_top(matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int) -> set[int]:
    return {int(i) for i in np.argsort(-(matrix @ query), kind="stable")[:k]}


def test_recall_at_10_against_the_exact_scan_is_at_least_099() -> None:
    data = embedding_like(30_000, 384, seed=1)
    matrix, queries = data[:-200], data[-200:]
    codes = SignCodes.of(matrix)
    recalls = []
    for query in queries:
        rows, scores = nearest(matrix, codes, query, 10)
        assert len(rows) == 10
        np.testing.assert_allclose(scores, matrix[rows] @ query, rtol=1e-5)  # exact cosines, not estimates
        recalls.append(len(exact_top(matrix, query, 10) & {int(r) for r in rows}) / 10)
    assert np.mean(recalls) >= 0.99, np.mean(recalls)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 400),
    dimensions=st.integers(1, 130),
    count=st.integers(1, 450),
    seed=st.integers(0, 2**32 - 1),
)
def test_closest_rows_are_those_with_the_fewest_differing_bits(
    rows: int, dimensions: int, count: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, dimensions)).astype(np.float32)
    query = rng.normal(size=dimensions).astype(np.float32)
    codes = SignCodes.of(matrix)
    distance = ((matrix > codes.mean) != (query > codes.mean)).sum(axis=1)
    closest = codes.closest(query, count)
    assert len(closest) == min(count, rows) and (np.diff(closest) > 0).all()  # distinct, in row order
    expected = np.lexsort((np.arange(rows), distance))[: min(count, rows)]  # fewest bits, ties by row
    assert sorted(closest.tolist()) == sorted(expected.tolist())


@pytest.mark.anyio
async def test_the_store_finds_the_exact_nearest_in_a_large_product_and_never_another_products(
    tmp_path: Path,
) -> None:
    data = embedding_like(QUANTIZE_MIN_ROWS + 2_000, QUANTIZE_MIN_DIMENSIONS, seed=3)
    big, small, queries = data[: QUANTIZE_MIN_ROWS + 1_000], data[-1_000:-50], data[-50:]

    def chunks(product: str, n: int) -> list[Chunk]:
        return [Chunk(product, {"id": i}, "f", 0, f"t{i}", str(i)) for i in range(n)]

    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        await store.apply("p.big", chunks("p.big", len(big)), big, [], model_id="m")
        await store.apply("p.small", chunks("p.small", len(small)), small, [], model_id="m")
        found = 0
        for query in queries:
            hits = await store.knn(query, k=10, products=["p.big"])
            assert {h.product for h in hits} == {"p.big"}
            assert [h.rank for h in hits] == list(range(1, 11))
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            found += len(exact_top(big, query, 10) & {h.key["id"] for h in hits})
        assert found / (10 * len(queries)) >= 0.99
        narrow = embedding_like(QUANTIZE_MIN_ROWS + 10, QUANTIZE_MIN_DIMENSIONS - 1, seed=4)
        await store.apply("p.narrow", chunks("p.narrow", len(narrow) - 10), narrow[:-10], [], model_id="m2")
        for query in narrow[-10:]:  # fewer dimensions than the codes need: scanned exactly
            hits = await store.knn(query, k=10, products=["p.narrow"])
            assert {h.key["id"] for h in hits} == exact_top(narrow[:-10], query, 10)


@pytest.mark.anyio
async def test_concurrent_queries_answer_as_one_at_a_time(tmp_path: Path) -> None:
    """Each worker thread has its own scratch buffers (BM25 scores, Hamming distances)."""
    data = embedding_like(QUANTIZE_MIN_ROWS + 500, QUANTIZE_MIN_DIMENSIONS, seed=5)
    rows, queries = data[:-16], data[-16:]
    words = ["kettle", "tea", "descaled", "parcel", "refund", "late"]
    texts = [" ".join(words[j] for j in range(len(words)) if (i >> j) & 1) or "empty" for i in range(len(rows))]
    chunks = [Chunk("p.big", {"id": i}, "f", 0, text, str(i)) for i, text in enumerate(texts)]
    async with EmbeddedSearchStore(tmp_path / "s.sqlite") as store:
        await store.apply("p.big", chunks, rows, [], model_id="m")
        await store.warm()
        alone = [
            (await store.bm25(words[i % 6] + " tea", k=20), await store.knn(q, k=20)) for i, q in enumerate(queries)
        ]
        together: list[object] = [None] * len(queries)

        async def one(i: int) -> None:
            together[i] = (await store.bm25(words[i % 6] + " tea", k=20), await store.knn(queries[i], k=20))

        async with anyio.create_task_group() as group:
            for i in range(len(queries)):
                group.start_soon(one, i)
        assert together == alone
