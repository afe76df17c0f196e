"""``run_sql`` over products with aggregate-only columns: the one shape that is allowed, enforced.

A column aggregate-only for the caller (``GovernedView.aggregate_only``) may be read only as the
argument of an aggregate in a SELECT that reads its product alone::

    SELECT dept, AVG(salary), MAX(salary) FROM hr.staff WHERE level > 2 GROUP BY dept [HAVING ...]

and that SELECT gets ``HAVING COUNT(*) >= n`` (the caller's HAVING is evaluated only for groups that
large: ``CASE WHEN COUNT(*) >= n THEN <caller's> ELSE FALSE END``), ``n`` the largest minimum group
size among the aggregate-only columns it reads; ``COUNT(*)`` counts the product's rows the group
is made of, because the product is the SELECT's only source. Everything else that could reach a raw
value is refused, with a message that says what is allowed:

* a product with aggregate-only columns joined to anything (a join can multiply rows), read as an
  operand of UNION/INTERSECT/EXCEPT, with its columns renamed in FROM (``AS p(a, b, …)``), or read by
  ``*``/``alias.*`` or by its alias as a whole row;
* an aggregate-only column outside an aggregate (projection, WHERE, GROUP BY, HAVING, ORDER BY), in a
  window (``SUM(salary) OVER ()``), under FILTER, in an aggregate that reveals members' values
  (``string_agg``, ``any_value``, ``median``, percentiles) or that reads any other column as well
  (``SUM(CASE WHEN id = 7 THEN salary END)`` picks one row out of a large group), or that holds anything
  but the column, literals, comparisons and CASE (``SUM(1 / (salary - 50000))`` fails when one row of
  any group holds 50000, before small groups are suppressed);
* an aggregate-only column referenced from a nested query (correlated), and nested queries, ROLLUP,
  CUBE and GROUPING SETS inside a SELECT that aggregates one; columns outside aggregates that are not
  grouped by (SQLite would return the row holding ``MAX(salary)``).

``MIN``/``MAX`` are allowed: a group's maximum is one member's value. Suppressed groups are not counted
on this path. What a group-size threshold does not stop (differencing, repeated queries) is in the
README's governance section.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from catalog.errors import SQLRefusedError
from catalog.policy import GovernedView

__all__ = ["enforce_aggregate_only"]

#: Aggregates that may read an aggregate-only column.
_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Stddev,
    exp.StddevPop,
    exp.StddevSamp,
    exp.Variance,
    exp.VariancePop,
    exp.ApproxDistinct,
    exp.CountIf,
)
_ALLOWED = "count, count(distinct), sum, avg, min, max, stddev, variance"
#: What an aggregate's argument may be made of when it reads an aggregate-only column: nothing that can
#: fail for some values (a division, a cast, arithmetic that overflows), or an error would tell one row's
#: value before the group-size rule applies.
_ARGUMENT_NODES: tuple[type[exp.Expr], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Star,
    exp.Distinct,
    exp.Paren,
    exp.Case,
    exp.If,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Between,
    exp.In,
    exp.Is,
    exp.Not,
    exp.And,
    exp.Or,
)


@dataclass
class _Restricted:
    """One reference to a product with aggregate-only columns, and the SELECT reading it."""

    table: exp.Table
    view: GovernedView
    alias: str
    select: exp.Select

    @property
    def columns(self) -> dict[str, int]:
        return {c.lower(): n for c, n in self.view.aggregate_only.items()}

    def hint(self, column: str) -> str:
        size = self.columns.get(column.lower(), max(self.columns.values()))
        return (
            f"aggregate it ({_ALLOWED}) in a SELECT that reads {self.view.name} alone, e.g. SELECT <group column>, "
            f"AVG({column}) FROM {self.view.name} GROUP BY <group column>; groups under {size} rows are suppressed"
        )


def enforce_aggregate_only(statement: exp.Query, references: Sequence[tuple[exp.Table, GovernedView, str]]) -> None:
    """Refuse ``statement`` unless every aggregate-only column is read as allowed; add the HAVING clauses.

    ``references`` are the product tables of the statement (not yet replaced by governed sources), their
    views and the aliases they are read by; column references have been resolved (``_check_columns``).

    Raises:
        SQLRefusedError: a use of an aggregate-only column that could reveal raw values (see the module doc).
    """
    restricted = [_restricted(table, view, alias) for table, view, alias in references if view.aggregate_only]
    if not restricted:
        return
    by_select = {id(r.select): r for r in restricted}
    aliases = {r.alias.lower(): r for r in restricted}
    reads: dict[int, set[str]] = {}
    for column in list(statement.find_all(exp.Column)):
        _check_column(column, by_select, aliases, reads)
    for r in restricted:
        _check_stars(r)
        read = reads.get(id(r.select))
        if read:
            _check_grouping(r, read)
            size = max(r.columns[c] for c in read)
            large: exp.Expr = exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(size))
            own = r.select.args.get("having")
            if isinstance(own, exp.Having):  # the caller's condition only for large groups: AND has no order
                large = exp.Case(ifs=[exp.If(this=large, true=exp.paren(own.this))], default=exp.false())
            r.select.set("having", exp.Having(this=large))


def _restricted(table: exp.Table, view: GovernedView, alias: str) -> _Restricted:
    names = ", ".join(sorted(view.aggregate_only))
    what = f"{view.name} has aggregate-only columns for you ({names})"
    source = table.parent
    select = source.parent if isinstance(source, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        raise SQLRefusedError(
            f"{what}: read it alone — FROM {view.name} with no join — and aggregate those columns with GROUP BY"
        )
    given = table.args.get("alias")
    if isinstance(given, exp.TableAlias) and given.columns:
        raise SQLRefusedError(f"{what}: its columns cannot be renamed in FROM (AS alias(a, b, ...)); use them by name")
    node: exp.Expr = select
    while isinstance(node.parent, exp.Subquery | exp.Paren):
        node = node.parent
    if isinstance(node.parent, exp.SetOperation):
        raise SQLRefusedError(
            f"{what}: it cannot be an operand of UNION/INTERSECT/EXCEPT; aggregate it in a CTE and combine the results"
        )
    return _Restricted(table, view, alias, select)


def _nearest_select(node: exp.Expr) -> exp.Select | None:
    found = node.find_ancestor(exp.Select)
    return found if isinstance(found, exp.Select) else None


def _check_column(
    column: exp.Column, by_select: dict[int, _Restricted], aliases: dict[str, _Restricted], reads: dict[int, set[str]]
) -> None:
    if not isinstance(column.this, exp.Identifier):
        return  # alias.* — checked with the stars
    name = column.name.lower()
    qualifier = column.table.lower()
    whole = aliases.get(name)
    if not qualifier and whole is not None and name not in {c.lower() for c in whole.view.columns}:
        raise SQLRefusedError(
            f"{name!r} reads a whole row of {whole.view.name}, which has aggregate-only columns for you; name the "
            "columns you need"
        )
    nearest = _nearest_select(column)
    scope = nearest
    found: _Restricted | None = None
    while scope is not None:  # the innermost SELECT reading a restricted product under that name
        found = by_select.get(id(scope))
        if found is not None and name in found.columns and qualifier in ("", found.alias.lower()):
            break
        scope = _nearest_select(scope)
    if scope is None or found is None:
        return
    r = found
    if scope is not nearest:
        raise SQLRefusedError(
            f"{column.name} is aggregate-only for you and cannot be read from a nested query; {r.hint(column.name)}"
        )
    aggregate = _aggregate_of(column, r.select)
    if aggregate is None:
        raise SQLRefusedError(
            f"{column.name} is aggregate-only for you and cannot be used outside an aggregate "
            f"(in the output, WHERE, GROUP BY, ORDER BY or a window); {r.hint(column.name)}"
        )
    if not isinstance(aggregate, _AGGREGATES):
        raise SQLRefusedError(
            f"{type(aggregate).__name__.lower()}() over {column.name} is not allowed: {column.name} is aggregate-only "
            f"for you; use {_ALLOWED}"
        )
    if isinstance(aggregate.parent, exp.Window | exp.Filter):
        raise SQLRefusedError(
            f"{column.name} is aggregate-only for you: aggregates over it cannot take OVER (...) or FILTER (...); "
            f"{r.hint(column.name)}"
        )
    others = [c.name for c in aggregate.find_all(exp.Column) if c.name.lower() not in r.columns]
    if others or aggregate.find(exp.Select):
        raise SQLRefusedError(
            f"an aggregate over {column.name} (aggregate-only for you) may read no other column "
            f"({', '.join(sorted(set(others))) or 'a subquery'}): it could single out rows of a group; "
            "filter with WHERE and group with GROUP BY instead"
        )
    for node in aggregate.iter_expressions():
        for part in node.walk():
            negative_number = isinstance(part, exp.Neg) and isinstance(part.this, exp.Literal)
            if not isinstance(part, _ARGUMENT_NODES) and not negative_number:
                raise SQLRefusedError(
                    f"an aggregate over {column.name} (aggregate-only for you) may hold only the column, literals, "
                    "comparisons and CASE (no arithmetic, casts or functions: an error on some values would reveal "
                    f"them); compute outside the aggregate, e.g. SUM({column.name}) / 12"
                )
    reads.setdefault(id(r.select), set()).add(name)


def _aggregate_of(column: exp.Column, select: exp.Select) -> exp.Expr | None:
    """The innermost aggregate ``column`` is an argument of, in the output, HAVING or ORDER BY of ``select``."""
    aggregate: exp.Expr | None = None
    node: exp.Expr = column
    while node.parent is not None and node.parent is not select:
        if aggregate is None and isinstance(node.parent, exp.AggFunc):
            aggregate = node.parent
        node = node.parent
    if node.parent is not select or node.arg_key not in ("expressions", "having", "order"):
        return None
    return aggregate


def _check_stars(r: _Restricted) -> None:
    for star in r.select.find_all(exp.Star):
        if _nearest_select(star) is not r.select or isinstance(star.parent, exp.Count):
            continue
        raise SQLRefusedError(
            f"SELECT * over {r.view.name} is not allowed: {', '.join(sorted(r.view.aggregate_only))} "
            f"aggregate-only for you; name the columns you need and {r.hint(next(iter(r.view.aggregate_only)))}"
        )


def _check_grouping(r: _Restricted, read: set[str]) -> None:
    """A SELECT that aggregates an aggregate-only column: plain GROUP BY, no nested query, no bare column."""
    columns = ", ".join(sorted(read))
    group = r.select.args.get("group")
    if isinstance(group, exp.Group) and (
        any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets"))
        or group.find(exp.Rollup, exp.Cube, exp.GroupingSets) is not None
    ):
        raise SQLRefusedError(
            f"ROLLUP, CUBE and GROUPING SETS are not allowed where {columns} (aggregate-only for you) is "
            "aggregated: subtotals minus visible groups would reveal suppressed ones; GROUP BY plain columns"
        )
    for nested in r.select.find_all(exp.Select):
        if nested is not r.select:
            raise SQLRefusedError(
                f"subqueries are not allowed in a SELECT that aggregates {columns} (aggregate-only for you); "
                "aggregate in a CTE and join or filter its result"
            )
    grouped = _group_expressions(r.select)
    own = {c.lower() for c in r.view.columns} - set(r.columns)
    for column in r.select.find_all(exp.Column):
        if not isinstance(column.this, exp.Identifier) or column.name.lower() not in own:
            continue  # aggregate-only columns are checked on their own; other names are outputs
        node: exp.Expr = column
        inside = False
        while node.parent is not None and node.parent is not r.select:
            if isinstance(node.parent, exp.AggFunc) or any(node == g for g in grouped):
                inside = True
                break
            node = node.parent
        if inside or node.arg_key not in ("expressions", "having", "order"):
            continue
        if any(node == g for g in grouped) or _is_output_alias(column, r.select):
            continue
        raise SQLRefusedError(
            f"{column.name!r} is neither grouped by nor aggregated in a SELECT that aggregates {columns} "
            f"(aggregate-only for you); add it to GROUP BY or aggregate it"
        )


def _group_expressions(select: exp.Select) -> list[exp.Expr]:
    group = select.args.get("group")
    if not isinstance(group, exp.Group):
        return []
    outputs = select.expressions
    found: list[exp.Expr] = []
    for item in group.expressions:
        if isinstance(item, exp.Literal) and item.is_int and 1 <= int(item.name) <= len(outputs):
            item = outputs[int(item.name) - 1]
        if isinstance(item, exp.Alias):
            item = item.this
        found.append(item)
    return found


def _is_output_alias(column: exp.Column, select: exp.Select) -> bool:
    """An unqualified name in ORDER BY that names an output of the SELECT (ORDER BY reads outputs first)."""
    if column.table or not isinstance(column.parent, exp.Ordered):
        return False
    aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}
    return column.name.lower() in aliases and isinstance(column.parent.parent, exp.Order)
