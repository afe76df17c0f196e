"""AST helpers for binding governed sources: find them, qualify their physical tables, name their scopes.

A governed source is a ``Subquery`` whose ``meta`` carries :data:`catalog.governed_source.GOVERNED`. Its body
reads physical tables and, when the contract gives a source query, CTEs of that query. Tables are told
from CTE references the way :mod:`catalog.compile` reports ``objects``: an unqualified name that some
CTE of the body defines is a CTE reference.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlglot import exp

from catalog.errors import QueryExecutionError
from catalog.governed_source import GOVERNED, GovernedMark

__all__ = ["cte_names", "digest", "governed_sources", "physical_tables", "rename_ctes"]


def governed_sources(statement: exp.Expr) -> list[tuple[exp.Subquery, GovernedMark]]:
    """The governed sources of ``statement`` with their marks, in document order.

    Raises:
        QueryExecutionError: a governed source contains another one (the compiler never builds that).
    """
    found: list[tuple[exp.Subquery, GovernedMark]] = []
    for node in statement.find_all(exp.Subquery):
        mark = node.meta.get(GOVERNED)
        if isinstance(mark, GovernedMark):
            found.append((node, mark))
    marked = {id(source) for source, _ in found}
    for source, _ in found:
        parent = source.parent
        while parent is not None:
            if id(parent) in marked:
                raise QueryExecutionError("governed sources cannot contain governed sources")
            parent = parent.parent
    return found


def cte_names(node: exp.Expr) -> set[str]:
    """Lower-cased names of every CTE defined anywhere in ``node``."""
    return {cte.alias_or_name.lower() for cte in node.find_all(exp.CTE)}


def physical_tables(body: exp.Expr) -> list[exp.Table]:
    """The table references of a governed body that name stored objects (not CTEs, not table functions)."""
    ctes = cte_names(body)
    return [
        table
        for table in body.find_all(exp.Table)
        if isinstance(table.this, exp.Identifier) and (table.db or table.name.lower() not in ctes)
    ]


def rename_ctes(body: exp.Expr, prefix: str) -> tuple[str, ...]:
    """Rename the CTEs of ``body`` to ``<prefix>_<n>`` (references keep their old name as alias); the new names."""
    renamed: dict[str, str] = {}
    for cte in body.find_all(exp.CTE):
        old = cte.alias_or_name.lower()
        new = renamed.setdefault(old, f"{prefix}_{len(renamed)}")
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            alias.set("this", exp.to_identifier(new, quoted=True))
    for table in body.find_all(exp.Table):
        if table.db or not isinstance(table.this, exp.Identifier) or table.name.lower() not in renamed:
            continue
        if not table.alias:
            table.set("alias", exp.TableAlias(this=table.this.copy()))
        table.set("this", exp.to_identifier(renamed[table.name.lower()], quoted=True))
    return tuple(renamed.values())


def digest(text: str, *, key: bytes | None = None, size: int = 32) -> str:
    """Hex digest of ``text`` (keyed with HMAC when ``key`` is given), ``size`` characters long."""
    data = text.encode("utf-8")
    full = hmac.new(key, data, hashlib.sha256).hexdigest() if key else hashlib.sha256(data).hexdigest()
    return full[:size]
