"""The search index as a replica: which state of its products a ``search_documents`` result comes from.

What ``retrieval:`` indexes is the product's other replica (the analytical one is in
:mod:`servers.replica_router`). Each index run records in the search store, per product, the source's
``as_of`` it read and when it ran (:class:`~connectors.search_base.IndexState`). The store itself is
the one source of truth for it, not the registry's replica log: the state is written with the chunks
(one SQLite transaction in the embedded store; Elasticsearch keeps it in the index mapping), so it can
never describe another index than the one that answers, and a store copied, restored or rebuilt
elsewhere carries its own state with it.

A result says so like a query result does (:func:`servers.replica_cases.stamp`)::

    store: {name: embedded, as_of: <oldest as_of of the products searched>, fallback_reason: null,
            products: {<product>: <its as_of>, ...}}   # products: only when several were searched

``as_of`` is the oldest: every hit holds at least that state. A product whose index is older than its
``retrieval.max_lag`` (else its analytical replica's ``max_lag``) adds a warning; its index still
answers, as no other store holds its text. An index written before states were recorded has
``as_of: null`` until its next index run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from catalog.contract import ProductContract, parse_duration
from catalog.timestamps import format_age
from connectors.search_base import IndexState, SearchStore

__all__ = ["index_max_lag", "stale_index_warning", "stamp_search"]


def index_max_lag(contract: ProductContract) -> str | None:
    """The oldest index the product's search results come from without a warning, None when unsaid."""
    if contract.retrieval is not None and contract.retrieval.max_lag is not None:
        return contract.retrieval.max_lag
    analytical = contract.replicas.analytical if contract.replicas is not None else None
    return analytical.max_lag if analytical is not None else None


def stale_index_warning(contract: ProductContract, state: IndexState | None, now: datetime) -> str | None:
    """What a search result says when the product's index is older than its max lag (None: it is not)."""
    max_lag = index_max_lag(contract)
    if max_lag is None or state is None or state.as_of is None:
        return None
    lag = (now - state.as_of).total_seconds()
    if lag <= parse_duration(max_lag).total_seconds():
        return None
    return (
        f"the search index of {contract.name} is {format_age(lag)} old (as_of {state.as_of:%Y-%m-%d %H:%M} UTC), "
        f"beyond its max_lag of {max_lag}; results may miss recent changes until `dataproducts index "
        f"{contract.name}` runs"
    )


async def stamp_search(result: Any, store: SearchStore, contracts: Sequence[ProductContract], now: datetime) -> Any:
    """Put ``store`` (see the module docstring) and stale-index warnings on a result of ``contracts``' search.

    Raises:
        ConnectorError: the store failed.
    """
    names = sorted({c.name for c in contracts})
    states = await store.index_states(names)
    as_ofs = {name: states[name].as_of if name in states else None for name in names}
    known = [a for a in as_ofs.values() if a is not None]
    oldest = min(known) if known and len(known) == len(as_ofs) else None
    result.store = {"name": store.kind, "as_of": _iso(oldest), "fallback_reason": None}
    if len(names) > 1:
        result.store["products"] = {name: _iso(as_of) for name, as_of in as_ofs.items()}
    for contract in contracts:
        warning = stale_index_warning(contract, states.get(contract.name), now)
        if warning is not None and warning not in result.warnings:
            result.warnings.append(warning)
    return result


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
