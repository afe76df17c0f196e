"""Column lineage of one ``source.query``: which physical table columns feed each output column.

sqlglot's :func:`sqlglot.lineage.lineage` traces one output column at a time through aliases, joins,
subqueries, CTEs and set operations down to the tables read. ``SELECT *`` and unqualified columns of
a join can only be traced when the tables' columns are known: the caller passes them as ``schema``
(the columns of the products whose source is that table). What cannot be traced is reported, never
guessed: such output columns are listed in ``unresolved`` and the tables read are still known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from pydantic import Field
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from catalog._model import FrozenModel

__all__ = ["QueryLineage", "derive_query_lineage", "table_key"]


class QueryLineage(FrozenModel):
    """What one query reads and how its output columns derive from it.

    ``columns`` maps an output column to the ``(table, column)`` pairs it is computed from (empty for a
    constant or ``count(*)``); ``unresolved`` lists output columns that could not be traced; ``reads``
    maps a table to every column of it the query reads anywhere (joins, filters, grouping too), as
    far as it can be told; ``error`` says why nothing could be traced at column level (then only
    ``tables`` is known, if anything).
    """

    tables: list[str]
    columns: dict[str, list[tuple[str, str]]]
    unresolved: list[str]
    reads: dict[str, list[str]] = Field(default_factory=dict)
    error: str | None = None


def table_key(name: str) -> str:
    """How tables are matched: ``schema.table`` or ``table`` as written, lower case, unquoted."""
    return ".".join(part.strip('"`[]').lower() for part in name.split("."))


def _table_name(table: exp.Table) -> str:
    return table_key(".".join(p for p in (table.db, table.name) if p))


def _column_name(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1].strip('"`[]').lower()


def _tables_read(parsed: exp.Expr) -> list[str]:
    ctes = {cte.alias_or_name.lower() for cte in parsed.find_all(exp.CTE)}
    names = {_table_name(t) for t in parsed.find_all(exp.Table) if t.name and t.name.lower() not in ctes}
    return sorted(names)


def derive_query_lineage(
    query: str,
    output_columns: Sequence[str],
    *,
    dialect: str | None = None,
    schema: Mapping[str, Sequence[str]] | None = None,
) -> QueryLineage:
    """Trace each of ``output_columns`` of ``query`` (written in ``dialect``) to the table columns feeding it.

    ``schema`` gives the known columns of unqualified tables (by :func:`table_key`); it lets
    ``SELECT *`` and unqualified columns of joins resolve. Never raises for SQL it cannot trace.
    """
    try:
        parsed = sqlglot.parse_one(query, read=dialect)
    except SqlglotError as exc:
        return QueryLineage(tables=[], columns={}, unresolved=list(output_columns), error=f"unparsable query: {exc}")
    tables = _tables_read(parsed)
    known: dict[str, Any] = {
        t: {c.lower(): "TEXT" for c in cols} for t, cols in (schema or {}).items() if "." not in t and cols
    }
    reads = _columns_read(parsed, known, dialect)
    columns: dict[str, list[tuple[str, str]]] = {}
    unresolved: list[str] = []
    for name in output_columns:
        try:
            root = lineage(name, parsed, known, dialect=dialect)
        except (SqlglotError, KeyError, ValueError):
            unresolved.append(name)
            continue
        feeds: list[tuple[str, str]] = []
        traced = True
        for node in root.walk():
            if node.downstream:
                continue
            if isinstance(node.source, exp.Table):
                feeds.append((_table_name(node.source), _column_name(node.name)))
            elif node is not root:  # an ambiguous column: sqlglot could not tell which table it comes from
                traced = False
        if traced:
            columns[name] = sorted(set(feeds))
        else:
            unresolved.append(name)
    for name in columns:
        for table, column in columns[name]:
            reads.setdefault(table, set()).add(column)
    return QueryLineage(
        tables=tables,
        columns=columns,
        unresolved=unresolved,
        reads={t: sorted(cs) for t, cs in sorted(reads.items())},
    )


def _columns_read(parsed: exp.Expr, schema: dict[str, Any], dialect: str | None) -> dict[str, set[str]]:
    """Every ``table -> columns`` the query mentions in any clause, where the column's table can be told.

    A column is attributed to a table when it is qualified by the table's alias, or unqualified in a
    SELECT reading one source only; anything else is left out.
    """
    try:
        qualified = qualify(
            parsed.copy(), schema=schema or None, dialect=dialect, validate_qualify_columns=False, identify=False
        )
        scopes = traverse_scope(qualified)
    except (SqlglotError, KeyError, ValueError):
        return {}
    reads: dict[str, set[str]] = {}
    for scope in scopes:
        only = list(scope.sources.values())
        for column in scope.columns:
            source = scope.sources.get(column.table) if column.table else (only[0] if len(only) == 1 else None)
            if isinstance(source, exp.Table):
                reads.setdefault(_table_name(source), set()).add(column.name.lower())
    return reads
