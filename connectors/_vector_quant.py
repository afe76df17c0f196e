"""The vector leg's candidate scan: one sign bit per dimension, then an exact float re-rank.

An exact search reads every float32 row (384 dimensions: 1.5 KiB a row, 154 MB at 100k chunks), and a
matrix-vector product is memory-bound: ~65 ms at 100k chunks on a busy 2-core box. Here each row is
also kept as the signs of its components after subtracting the product's mean vector (48 bytes a
row for 384 dimensions, 32× less to read), the query is coded the same way, and the ``rerank`` rows
differing from it in the fewest bits (Hamming distance: XOR and popcount over 64-bit words) are
scored exactly in float32; the ``k`` best of those are returned with their exact cosines.

Why it keeps recall: the angle between two vectors is, in expectation, proportional to the fraction
of random hyperplanes separating them (Charikar 2002); the coordinate hyperplanes of centred
embeddings are close enough to random for a coarse ranking, and the re-rank sees
``max(RERANK_MIN, RERANK_PER_HIT · k)`` rows (4,000 for k = 100, 4% of a 100k product), far more
than the ``k`` it keeps. Centring helps when a model puts every vector in one narrow cone, where raw
signs agree on most dimensions. A product of at most ``2 · rerank`` rows is scanned exactly (the codes
would not pay), and so are vectors of fewer than 256 dimensions (64 bits rank too coarsely: recall@10
0.98 on clustered 64-d vectors, and their exact scan reads 6× less). Recall@10 against the exact
scan is measured by ``bench/search_latency.py`` and tested on clustered vectors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["QUANTIZE_MIN_DIMENSIONS", "QUANTIZE_MIN_ROWS", "SignCodes", "nearest"]

#: Products with fewer rows, or vectors of fewer dimensions (too few bits to rank by, and a cheaper
#: exact scan), are always scanned exactly and get no codes.
QUANTIZE_MIN_ROWS = 4_096
QUANTIZE_MIN_DIMENSIONS = 256
RERANK_MIN = 2_000
RERANK_PER_HIT = 40


@dataclass(frozen=True)
class SignCodes:
    """Sign bits of ``matrix - mean``, row ``i``'s bits in ``words[:, i]`` (each word's column contiguous)."""

    mean: npt.NDArray[np.float32]
    words: npt.NDArray[np.uint64]
    _scratch: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @classmethod
    def of(cls, matrix: npt.NDArray[np.float32]) -> SignCodes:
        mean = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
        return cls(mean, _pack(matrix > mean).T.copy())

    def closest(self, query: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.intp]:
        """Indices of the ``count`` rows whose codes differ least from the query's (ties by index), in
        index order."""
        coded = _pack((query > self.mean)[np.newaxis, :])[0]
        differ, bits, distance = self._buffers()  # reused: fresh arrays cost page faults per query
        distance.fill(0)
        for j in range(len(coded)):
            np.bitwise_xor(self.words[j], coded[j], out=differ)
            np.add(distance, np.bitwise_count(differ, out=bits), out=distance)
        if count >= len(distance):
            return np.arange(len(distance))
        # Distances are small integers: a histogram finds the count-th smallest (a partition costs 10× more).
        within = np.cumsum(np.bincount(distance))
        cut = int(np.searchsorted(within, count))  # the distance of the count-th closest row
        closer = np.flatnonzero(distance < cut)
        at_cut = np.flatnonzero(distance == cut)[: count - len(closer)]
        return np.sort(np.concatenate((closer, at_cut)))

    def _buffers(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[Any]]:
        buffers = getattr(self._scratch, "buffers", None)
        if buffers is None:
            rows = self.words.shape[1]
            buffers = self._scratch.buffers = (
                np.empty(rows, np.uint64),
                np.empty(rows, np.uint8),
                np.empty(rows, np.uint16 if self.words.shape[0] * 64 < 1 << 16 else np.uint32),
            )
        return buffers


def _pack(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint64]:
    """Rows of bits as rows of 64-bit words (zero-padded)."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    padded = np.zeros((len(packed), -(-packed.shape[1] // 8) * 8), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def nearest(
    matrix: npt.NDArray[np.float32], codes: SignCodes | None, query: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Row indices and exact scores (``matrix @ query``) of the ``k`` best rows, unordered: exact scan
    without ``codes`` or on few rows, else the codes' ``rerank`` closest rows re-ranked exactly."""
    rerank = max(RERANK_MIN, RERANK_PER_HIT * k)
    if codes is None or len(matrix) <= 2 * rerank:
        rows = np.arange(len(matrix))
        scores = np.einsum("ij,j->i", matrix, query)  # no BLAS threads: see search_embedded's docstring
    else:
        rows = codes.closest(query, rerank)  # in row order: the gather reads forward
        scores = np.einsum("ij,j->i", matrix[rows], query)
    if len(scores) > k:
        top = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[top], scores[top]
    return rows, scores
