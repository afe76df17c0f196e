"""Which store answers a read: the product's source, or its analytical replica.

:func:`choose_store` decides, per request, from the contract, the principal's governed view and the
replica's current run (:class:`~catalog.replica_log.ReplicaSync`):

* reads of rows (point lookups by primary key, row pages) go to the source: it holds the latest
  state, and its indexes serve them;
* aggregates and metrics go to the replica when it can answer exactly as the source would — it has
  been synced, for this layout of the contract, its lag (now − ``as_of``) is within ``max_lag`` and
  within the product's freshness SLA, and its stored values are the ones this principal may see
  (a ``masked_at_rest`` replica serves only principals whose view masks exactly those columns
  the same way); otherwise they go to the source and the decision carries the reason.

:func:`replica_view` is the governed view the replica's statements compile from: the same principal,
row filters and aggregate-only columns over the replica table, with masks applied by the compiler as
on the source — except those already stored (masked at rest), which are read as they are.

Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from catalog.contract import ProductContract, Source, parse_duration
from catalog.freshness import freshness_sla
from catalog.policy import GovernedView
from catalog.replica import AnalyticalReplica, at_rest_masks, columns_digest
from catalog.replica_log import ReplicaSync
from catalog.timestamps import format_age

__all__ = ["REPLICA_TABLE", "StoreChoice", "choose_store", "portable_filter", "replica_view"]

#: The table every replica file holds.
REPLICA_TABLE = "replica"


@dataclass(frozen=True)
class StoreChoice:
    """Where a read goes: ``replica`` (with its run) or ``source``; ``fallback_reason`` says why an
    aggregate that could have used the replica did not."""

    store: Literal["source", "replica"]
    run: ReplicaSync | None = None
    fallback_reason: str | None = None


def _analytical(contract: ProductContract) -> AnalyticalReplica | None:
    return contract.replicas.analytical if contract.replicas else None


def choose_store(
    view: GovernedView, run: ReplicaSync | None, *, aggregate: bool, now: datetime, file_exists: bool = True
) -> StoreChoice:
    """The store that answers ``view``'s read (``aggregate``: an aggregate or metrics read) at ``now``."""
    contract = view.contract
    replica = _analytical(contract)
    if replica is None or not aggregate:
        return StoreChoice("source")
    name = contract.name

    def fallback(reason: str) -> StoreChoice:
        return StoreChoice("source", run, f"answered by the source: {reason}")

    if run is None or run.as_of is None or run.path is None:
        return fallback(f"the replica of {name} has not been synced yet (dataproducts sync {name})")
    if run.columns_digest != columns_digest(contract) or run.masked_at_rest != replica.masked_at_rest:
        return fallback(f"the replica of {name} was built for another version of its columns or masks; sync it")
    if not file_exists:
        return fallback(f"the replica file of {name} is missing; sync it")
    lag_s = max((now - run.as_of).total_seconds(), 0.0)
    limits = [("max_lag", replica.max_lag)]
    sla = freshness_sla(contract)
    if sla is not None:
        limits.append(("the freshness SLA", sla))
    for what, limit in limits:
        if lag_s > parse_duration(limit).total_seconds():
            return fallback(f"the replica of {name} is {format_age(lag_s)} behind, over {what} {limit}")
    stored = at_rest_masks(contract) if replica.masked_at_rest else {}
    unsure = [where for where in view.row_filters if not portable_filter(where, set(stored))]
    if unsure:
        return fallback(
            f"a row filter of your view of {name} ({unsure[0][:80]!r}) is evaluated by the source: it reads a "
            "column stored masked, or uses what the replica's engine may evaluate differently (pattern "
            "matching, functions, ordering of text)"
        )
    if replica.masked_at_rest:
        if dict(view.masked) != stored:
            return fallback(f"the replica of {name} stores masked values and your view of it is not the masked one")
    else:
        computed = [c for c in view.masked if (column := contract.column(c)) is not None and column.type != "string"]
        if computed:
            return fallback(
                f"{sorted(computed)} are masked for you and are not text: their masked values follow the store's "
                "text form, so the source computes them"
            )
    return StoreChoice("replica", run)


_COMPARISONS = (exp.EQ, exp.NEQ)
_ORDERINGS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)
_STRUCTURE = (exp.And, exp.Or, exp.Not, exp.Paren, exp.In, exp.Is, exp.Tuple)
_VALUES = (exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Neg)


def portable_filter(where: str, stored_masked: set[str]) -> bool:
    """True when the row filter ``where`` selects the same rows on the replica (DuckDB) as on any source:
    only columns not stored masked, literals, ``=``/``<>``/``IN``/``IS [NOT] NULL``, ``AND``/``OR``/``NOT``,
    and orderings (``<``, ``BETWEEN``…) against numbers only — no pattern matching, no function, no text
    ordering (collations differ between stores), nothing read in another dialect's sense.
    """
    try:
        parsed = sqlglot.parse_one(where, into=exp.Condition)
    except SqlglotError:
        return False
    for node in parsed.walk():
        if isinstance(node, exp.Column):
            if node.name in stored_masked or node.name.lower() in {c.lower() for c in stored_masked}:
                return False
        elif isinstance(node, _ORDERINGS):
            bounds = [node.expression] if not isinstance(node, exp.Between) else [node.args["low"], node.args["high"]]
            if not all(_number(bound) for bound in bounds):
                return False
        elif not isinstance(node, _COMPARISONS + _STRUCTURE + _VALUES):
            return False
    return True


def _number(node: exp.Expr | None) -> bool:
    if isinstance(node, exp.Neg):
        node = node.this
    return isinstance(node, exp.Literal) and not node.is_string


def replica_view(view: GovernedView, *, connection: str, table: str = REPLICA_TABLE) -> GovernedView:
    """``view`` over the replica ``table`` of ``connection`` (see the module docstring)."""
    contract = view.contract
    replica = _analytical(contract)
    stored = at_rest_masks(contract) if replica is not None and replica.masked_at_rest else {}
    columns = [
        c.model_copy(update={"type": "string", "nullable": True}) if c.name in stored else c for c in contract.columns
    ]
    source = Source(connection=connection, table=table)
    on_replica = contract.model_copy(update={"source": source, "columns": columns})
    masked = {c: m for c, m in view.masked.items() if c not in stored}
    return GovernedView(
        contract=on_replica,
        principal=view.principal,
        masked=masked,
        row_filters=list(view.row_filters),
        aggregate_only=dict(view.aggregate_only),
    )
