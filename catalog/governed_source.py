"""The governed source: a product as one principal may see it, and the governed statements built on it.

:func:`governed_source` is the subquery every read goes through (masks in its projection, row filters
in its WHERE; see :mod:`catalog.compile` for why everything the caller controls sits outside it). It
carries a :class:`GovernedMark` under :data:`GOVERNED`, by which connectors find it to bind it to
what the store enforces itself and to qualify the physical names inside it.
:class:`GovernedStatement` is a SELECT over governed sources and the limits it runs under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from catalog._sqlbuild import column_ref, mask_expression
from catalog.errors import InvalidRequestError
from catalog.policy import GovernedView
from catalog.query import Limits

__all__ = ["GOVERNED", "SOURCE_ALIAS", "GovernedMark", "GovernedStatement", "governed_source", "source_alias"]

#: Alias of the physical table or source query inside every governed source.
SOURCE_ALIAS = "_source"
#: ``Subquery.meta`` key that marks a governed source; its value is a :class:`GovernedMark`.
GOVERNED = "dataproducts.governed"


@dataclass(frozen=True)
class GovernedMark:
    """What a governed source is: the product it serves and the physical objects it reads.

    Connectors find governed sources by this mark to bind them to what the store enforces itself
    (views, roles, an authorizer) and to qualify the physical names inside them; the audit row lists
    ``objects``. ``objects`` are the names as the contract writes them (``orders``, ``sales.orders``).
    """

    product: str
    objects: tuple[str, ...]
    #: The salt of the source's hash masks (None: no column is hashed). A store that keeps governed
    #: sources as database objects must keep it out of their definitions, which callers can read.
    hash_salt: str | None = None


def source_alias(view: GovernedView) -> str:
    """The default alias of a product's governed source: its name after the domain (``orders``)."""
    return view.name.split(".", 1)[1]


def governed_source(
    view: GovernedView, *, dialect: str, hash_salt: str, alias: str | exp.TableAlias | None = None, fence: bool = False
) -> exp.Subquery:
    """The product as the principal may see it: a subquery that masks columns and applies row filters.

    ``dialect`` is the store's sqlglot dialect (``source.query`` and row filters are read in it);
    ``alias`` defaults to :func:`source_alias`; ``fence`` adds ``OFFSET 0`` (see the module docstring).

    Raises:
        InvalidRequestError: the contract's source query or a row filter does not parse in ``dialect``.
    """
    contract = view.contract
    inner = SOURCE_ALIAS  # every inner reference is qualified, so none can resolve to an outer query
    projections: list[exp.Expr] = []
    for name in view.columns:
        method = view.masked.get(name)
        if method is None:
            projections.append(column_ref(name, inner))
        else:
            masked = mask_expression(name, method, hash_salt=hash_salt, table=inner)
            projections.append(exp.alias_(masked, name, quoted=True))
    source_name = exp.TableAlias(this=exp.to_identifier(inner, quoted=True))
    try:
        if contract.source.table is not None:
            *schema, table = contract.source.table.split(".")
            source: exp.Expr = exp.table_(table, db=schema[0] if schema else None, quoted=True, alias=inner)
            source.set("alias", source_name)
        else:
            query = sqlglot.parse_one(contract.source.query or "", read=dialect)
            source = exp.Subquery(this=query, alias=source_name)
        filters = [sqlglot.parse_one(where, read=dialect, into=exp.Condition) for where in view.row_filters]
    except ParseError as exc:
        raise InvalidRequestError(f"the contract of {view.name} does not parse as {dialect} SQL: {exc}") from exc
    for condition in filters:  # row filters read the product's own columns (no subqueries: the contract checks)
        for column in condition.find_all(exp.Column):
            column.set("table", exp.to_identifier(inner, quoted=True))
            column.set("db", None)
            column.set("catalog", None)
    select = exp.select(*projections).from_(source)
    for condition in filters:
        select = select.where(exp.paren(condition, copy=False), copy=False)
    if fence:
        select = select.offset(0, copy=False)
    if isinstance(alias, exp.TableAlias):
        table_alias = alias
    else:
        table_alias = exp.TableAlias(this=exp.to_identifier(alias or source_alias(view), quoted=alias is None))
    governed = exp.Subquery(this=select, alias=table_alias)
    hashed = "hash" in view.masked.values()
    governed.meta[GOVERNED] = GovernedMark(view.name, _physical_objects(source), hash_salt if hashed else None)
    return governed


def _physical_objects(source: exp.Expr) -> tuple[str, ...]:
    """The tables a governed source reads: its table, or the tables of its source query that are no CTE."""
    if isinstance(source, exp.Table):
        return (".".join(p.name for p in source.parts),)
    ctes = {cte.alias_or_name.lower() for cte in source.find_all(exp.CTE)}
    names = (
        ".".join(p.name for p in t.parts) for t in source.find_all(exp.Table) if t.db or t.name.lower() not in ctes
    )
    return tuple(sorted(set(names)))


@dataclass(frozen=True)
class GovernedStatement:
    """A governed SELECT and the limits it runs under: connectors run it as it is.

    ``limits.max_rows`` is how many rows the caller gets; ``statement`` fetches one more, so that the
    connector can report ``truncated`` when more exist. Build it with :class:`catalog.compiler.Compiler`
    (or :func:`compile_query`), never by hand: that is where the two numbers are kept in step.
    """

    statement: exp.Query
    limits: Limits
    #: Values of the statement's placeholders (``exp.Placeholder`` named ``p0``, ``p1``…), bound by the
    #: store's driver; empty when every value is an inline literal.
    parameters: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
