"""Helpers shared by the search stores: checking an index run's vectors and the model-mismatch message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from catalog.errors import InvalidRequestError
from connectors.search_base import Chunk

__all__ = ["checked_vectors", "model_mismatch"]


def checked_vectors(product: str, upserts: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """The run's vectors as little-endian float32 rows, L2-normalised (zero rows stay zero).

    Raises:
        InvalidRequestError: chunks of another product, or not one finite row per upserted chunk.
    """
    others = sorted({c.product for c in upserts} - {product})
    if others:
        raise InvalidRequestError(f"an index run of {product!r} holds chunks of {others}; apply each product alone")
    matrix = np.asarray(vectors, dtype="<f4")
    if not upserts and matrix.size == 0:
        return matrix.reshape(0, matrix.shape[-1] if matrix.ndim == 2 else 0)
    if matrix.ndim != 2 or matrix.shape[0] != len(upserts) or matrix.shape[1] == 0:
        raise InvalidRequestError(
            f"vectors must be one row per upserted chunk: {len(upserts)} chunks, vectors of shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise InvalidRequestError("vectors hold NaN or infinite values; the embedder failed")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def model_mismatch(product: str, known: tuple[str, int], model_id: str, dimensions: int) -> InvalidRequestError:
    """The error of an index run whose model differs from the one the product was indexed with."""
    return InvalidRequestError(
        f"product {product!r} is indexed with model {known[0]!r} ({known[1]} dimensions), not {model_id!r} "
        f"({dimensions} dimensions); re-index needed: drop the product's search index, then index it again"
    )
