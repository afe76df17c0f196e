"""Which search hits a principal may see: the rows are re-read through the governed query path.

A search store holds chunks of every row (rows are governed at read time, not at index time). Before a
hit is returned, its primary key is looked up through the same governed source as ``query_product``
— access, row filters and masks — so a hit whose row the principal cannot read is dropped, and a
field masked for the principal is never shown. The keys are read :data:`KEYS_PER_READ` at a time, so
any number of hits is checked by statements every store accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from catalog.compiler import Compiler
from catalog.policy import GovernedView
from catalog.query import AllOf, AnyOf, Condition, Filter, Query
from catalog.values import json_value
from connectors.base import Connector
from connectors.search_base import key_token

__all__ = ["KEYS_PER_READ", "searchable", "visible_keys"]

#: Keys re-read per statement. The keys are ORed into one WHERE clause, which stores parse as a tree
#: as deep as the number of keys: SQLite refuses one deeper than 1000 ("Expression tree is too large").
KEYS_PER_READ = 100


async def visible_keys(
    view: GovernedView, connector: Connector, compiler: Compiler, keys: Iterable[dict[str, Any]]
) -> set[str]:
    """The :func:`key_token` of every given key whose row ``view.principal`` may read.

    Raises:
        InvalidRequestError: the product has no primary key (its hits cannot be checked).
        ConnectorError: the store failed.
    """
    primary_key = view.contract.primary_key
    wanted = {key_token(k): k for k in keys if set(k) == set(primary_key)}
    found: set[str] = set()
    batch = list(wanted.values())
    for start in range(0, len(batch), KEYS_PER_READ):
        found |= await _visible_batch(view, connector, compiler, batch[start : start + KEYS_PER_READ])
    return found & set(wanted)


async def _visible_batch(
    view: GovernedView, connector: Connector, compiler: Compiler, keys: list[dict[str, Any]]
) -> set[str]:
    """One governed read of up to :data:`KEYS_PER_READ` keys (distinct, complete)."""
    primary_key = view.contract.primary_key
    alternatives: list[Filter] = []
    for key in keys:
        conditions: list[Filter] = [Condition(column=c, op="=", value=key[c]) for c in primary_key]
        alternatives.append(conditions[0] if len(conditions) == 1 else AllOf.model_validate({"and": conditions}))
    where: list[Filter] = [alternatives[0] if len(alternatives) == 1 else AnyOf.model_validate({"or": alternatives})]
    query = Query(columns=list(primary_key), where=where, limit=len(keys))
    rowset = await connector.execute(compiler.bounded(max_rows=len(keys)).compile(view, query))
    return {key_token({c: json_value(v) for c, v in zip(rowset.columns, row, strict=True)}) for row in rowset.rows}


def searchable(view: GovernedView, field: str) -> bool:
    """A hit on ``field`` may be shown: the field is neither masked nor aggregate-only for the principal,
    and the row's key (which cites it) is not aggregate-only."""
    if field in view.masked or field in view.aggregate_only:
        return False
    return not set(view.aggregate_only) & set(view.contract.primary_key)
