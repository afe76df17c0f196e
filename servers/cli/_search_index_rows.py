"""The search index's lines of ``dataproducts replicas``: one per product with a ``retrieval:`` section."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from catalog.contract import ProductContract
from catalog.timestamps import format_age
from servers.search_index import index_max_lag
from servers.service import DataProductsService

__all__ = ["search_index_rows"]


async def search_index_rows(
    service: DataProductsService, contracts: Sequence[ProductContract], now: datetime
) -> list[tuple[str, ...]]:
    """``(product, store, max_lag, as_of, age, rows, last run)`` of each indexed product's search index.

    Raises:
        ConnectorError: the search store failed (with how to repair a damaged one).
    """
    indexed = [c for c in contracts if c.retrieval is not None]
    if not indexed:
        return []
    with service.retrieval.store_errors():
        store = await service.retrieval.store()
        states = await store.index_states([c.name for c in indexed])
    rows: list[tuple[str, ...]] = []
    for contract in indexed:
        kind, max_lag = f"{store.kind} index", index_max_lag(contract) or "-"
        state = states.get(contract.name)
        if state is None:
            rows.append((contract.name, kind, max_lag, "-", "-", "-", "never: run `dataproducts index`"))
            continue
        chunks = f"{state.chunks} chunks"
        if state.as_of is None or state.indexed_at is None:  # indexed before index runs recorded their state
            rows.append((contract.name, kind, max_lag, "-", "-", chunks, "unknown: re-run `dataproducts index`"))
            continue
        age = format_age(max((now - state.as_of).total_seconds(), 0.0))
        last = f"indexed {state.indexed_at:%Y-%m-%d %H:%M:%S}"
        rows.append((contract.name, kind, max_lag, f"{state.as_of:%Y-%m-%d %H:%M:%S}", age, chunks, last))
    return rows
