"""Compile a neutral :class:`~catalog.query.Query` into one governed SELECT (a sqlglot AST).

Every read goes through the view's *governed source*::

    SELECT <col>, MD5('salt' || CAST("email" AS TEXT)) AS "email", ...   -- masks
    FROM <physical table | (source.query)>
    WHERE (<row filter 1>) AND (<row filter 2>)                          -- policy
    [OFFSET 0]                                                            -- optimisation fence

aliased as the product (``orders`` for ``sales.orders``). Everything the caller controls —
projection, filters, grouping, aggregates, ordering, the cursor predicate, ``run_sql`` text — sits
outside it, so it only ever sees masked values and can never escape a row filter with an ``OR``.

The fence (``OFFSET 0``; ``LIMIT -1 OFFSET 0`` on SQLite) stops PostgreSQL, SQLite and DuckDB from
pushing outer predicates below the row filters, where an expression that fails on some rows (a cast,
a division) could turn errors into an oracle about rows the principal may not see. Structured queries
only compare typed literals, which cannot fail per row, so :func:`compile_query` leaves the fence off
and keeps index and scan pushdown; :mod:`catalog.sqlguard` sets it whenever row filters apply.

Filters compare against typed literals checked against the column's visible type (masked columns are
strings). ``like`` patterns use ``%`` and ``_`` with backslash as the escape character on every store
(``ESCAPE '\\'``); case sensitivity follows the store (SQLite's LIKE ignores ASCII case).

Aggregate-only columns (``GovernedView.aggregate_only``) are refused in row queries, filters, ordering
and grouping, and left out of the default projection; an aggregate query whose aggregates read one
gets ``HAVING COUNT(*) >= n`` (``n`` the largest minimum group size among those it reads; without
``group_by`` the whole visible set is one group), and :attr:`CompiledQuery.suppressed` counts the
groups it leaves out.

Pagination: statements fetch ``LIMIT n+1`` rows where ``n = min(query.limit, limits.max_rows)`` is
:attr:`CompiledQuery.row_limit`; the compiled query carries the limits to run it with (``max_rows =
n``, :class:`GovernedStatement`), so the connector reports ``truncated`` when more rows exist.
Non-aggregate queries use a keyset cursor over the caller's
``order_by`` plus the primary key (NULLs sort last in every direction, and the keyset predicate is
NULL-aware, so nullable order columns page correctly). An offset cursor is used instead when the
product has no primary key, when a key column is not in the projection, or when a key column is
masked by a method that is not one-to-one; offset pages are ordered by all projected columns as well
and can skip or repeat rows if the data changes between pages. Aggregate queries page by offset.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlglot import exp

from catalog._cursor import Cursor, decode_cursor, encode_cursor, shape_digest
from catalog._sqlbuild import bindable, column_ref, literal, resolve_column
from catalog.errors import InvalidRequestError
from catalog.governed_source import GovernedStatement, governed_source, source_alias
from catalog.policy import GovernedView
from catalog.query import Aggregate, AllOf, AnyOf, Condition, Filter, Limits, Query, RowSet

__all__ = [
    "CompiledQuery",
    "OrderKey",
    "bind_parameters",
    "compile_query",
    "condition_on",
    "next_cursor",
    "query_shape",
    "rebind",
]

_NUMERIC = frozenset({"integer", "float", "decimal"})
_UNORDERABLE = frozenset({"json", "bytes"})
_TEMPORAL: dict[str, Any] = {
    "date": dt.date.fromisoformat,
    "timestamp": dt.datetime.fromisoformat,
    "time": dt.time.fromisoformat,
}
_COMPARISONS: dict[str, type[exp.Binary]] = {
    "=": exp.EQ,
    "!=": exp.NEQ,
    "<": exp.LT,
    "<=": exp.LTE,
    ">": exp.GT,
    ">=": exp.GTE,
}


@dataclass(frozen=True)
class OrderKey:
    """One column of the page order: output column name, direction, whether it can hold NULL."""

    column: str
    descending: bool = False
    nullable: bool = True


@dataclass(frozen=True)
class CompiledQuery(GovernedStatement):
    """One governed SELECT of a :class:`~catalog.query.Query`, plus what :func:`next_cursor` needs."""

    statement: exp.Select
    columns: list[str]
    pagination: Literal["keyset", "offset", "none"]
    keys: tuple[OrderKey, ...]
    offset: int
    shape: str
    #: Aggregate queries that read aggregate-only columns: the smallest group returned (HAVING COUNT(*) >= n)
    #: and the aggregate-only columns read; ``suppressed`` counts the groups the statement left out.
    min_group_size: int | None = None
    aggregate_only_read: tuple[str, ...] = ()
    suppressed: GovernedStatement | None = None

    @property
    def row_limit(self) -> int:
        """Rows of one page: ``min(query.limit, limits.max_rows)``."""
        return self.limits.max_rows


def compile_query(
    view: GovernedView, query: Query, *, limits: Limits, dialect: str, hash_salt: str, parameters: bool = False
) -> CompiledQuery:
    """Compile ``query`` over the governed source of ``view``.

    With ``parameters``, the filter values become placeholders and :attr:`GovernedStatement.parameters`
    holds them, so the statement serves every query of the same :func:`query_shape` once
    :func:`bind_parameters` has checked the new values (a cursor's values stay inline).

    Raises:
        InvalidRequestError: unknown column (with a close-match suggestion and the column list), a value
            that does not fit its column's type, an aggregate that does not fit its column, an order
            column that is not part of the output, or a cursor from a different query.
    """
    builder = _Builder(view, params={} if parameters else None)
    alias = source_alias(view)
    source = governed_source(view, dialect=dialect, hash_salt=hash_salt)
    row_limit = min(query.limit or limits.max_rows, limits.max_rows)
    select = exp.select().from_(source)
    if query.where:
        select = select.where(exp.and_(*(builder.filter(f, alias) for f in query.where)), copy=False)
    suppressed: GovernedStatement | None = None
    read_columns = {builder.column(a.column) for a in query.aggregates if a.column is not None}  # declared spelling
    read = tuple(sorted(c for c in read_columns if c in view.aggregate_only))
    min_group = max((view.aggregate_only[c] for c in read), default=None)
    if query.is_aggregate:
        if min_group is not None:
            suppressed = _suppressed_groups(select, query, builder, alias, min_group, limits)
        columns, order, keys, pagination = builder.aggregate(query, select, alias)
        if min_group is not None:
            select = select.having(_group_size(exp.GTE, min_group), copy=False)
    else:
        columns, order, keys, pagination = builder.rows(query, select, alias)
    shape = _cursor_shape(view, pagination, query)
    offset = 0
    if query.cursor is not None:
        if pagination == "none":
            raise InvalidRequestError("this query returns a single page; drop the cursor")
        cursor = decode_cursor(query.cursor, shape=shape)
        if cursor.mode != pagination or (cursor.mode == "keyset" and len(cursor.after) != len(keys)):
            raise InvalidRequestError("invalid cursor for this query; drop the cursor to start again")
        if cursor.mode == "keyset":
            select = select.where(_keyset_predicate(keys, cursor.after, alias, order), copy=False)
        else:
            offset = cursor.offset
    if order:
        select = select.order_by(*order, copy=False)
    select = select.limit(row_limit + 1, copy=False)
    if offset:
        select = select.offset(offset, copy=False)
    run_limits = limits.model_copy(update={"max_rows": row_limit})
    if suppressed is not None and builder.params:
        suppressed = GovernedStatement(suppressed.statement, suppressed.limits, parameters=dict(builder.params))
    return CompiledQuery(
        select,
        run_limits,
        columns,
        pagination,
        tuple(keys),
        offset,
        shape,
        min_group,
        read,
        suppressed,
        parameters=dict(builder.params or {}),
    )


def rebind(compiled: CompiledQuery, view: GovernedView, query: Query) -> CompiledQuery:
    """``compiled`` (from ``compile_query(..., parameters=True)`` on a query of the same
    :func:`query_shape`) for ``query``: its values checked and bound, its cursors made for it.

    Raises:
        InvalidRequestError: as :func:`bind_parameters`.
    """
    parameters = bind_parameters(view, query)
    suppressed = compiled.suppressed
    if suppressed is not None and suppressed.parameters:
        suppressed = replace(suppressed, parameters=parameters)
    shape = _cursor_shape(view, compiled.pagination, query)
    return replace(compiled, shape=shape, suppressed=suppressed, parameters=parameters)


def _cursor_shape(view: GovernedView, pagination: str, query: Query) -> str:
    """What a cursor of ``query``'s pages is valid for: the query without its cursor and page size."""
    dumped = query.model_dump(mode="json", exclude={"cursor", "limit"})
    return shape_digest({"product": view.name, "pagination": pagination, **dumped})


def query_shape(query: Query) -> str:
    """What the statement of ``query`` depends on: the query with each filter value replaced by its type.

    Two queries of one shape compile to the same statement with placeholders (see ``compile_query(...,
    parameters=True)``); the values are checked and bound by :func:`bind_parameters`. A query with a
    cursor is its own shape (the cursor's values are inline and checked against the query's values).
    """
    if query.cursor is not None:
        return "cursor:" + query.model_dump_json()
    dumped = query.model_dump(mode="json", by_alias=True)
    dumped["where"] = [_value_types(f) for f in dumped.get("where") or []]
    return json.dumps(dumped, sort_keys=True, separators=(",", ":"))


def _value_types(item: dict[str, Any]) -> dict[str, Any]:
    for group in ("and", "or"):
        if group in item:
            return {group: [_value_types(f) for f in item[group]]}
    value = item.get("value")
    typed = [type(v).__name__ for v in value] if isinstance(value, list) else type(value).__name__
    return {**item, "value": typed}


def bind_parameters(view: GovernedView, query: Query) -> dict[str, Any]:
    """The placeholder values of ``query``'s statement, each checked as :func:`compile_query` checks it.

    Raises:
        InvalidRequestError: unknown column, or a value that does not fit its column's visible type.
    """
    builder = _Builder(view, params={})
    for item in query.where:
        builder.bind(item)
    return builder.params or {}


def _group_size(compare: type[exp.Binary], size: int) -> exp.Expr:
    """``COUNT(*) <compare> size``: the rows of the governed source a group is made of."""
    return compare(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(size))


def _suppressed_groups(
    select: exp.Select, query: Query, builder: _Builder, alias: str, size: int, limits: Limits
) -> GovernedStatement:
    """``SELECT COUNT(*) FROM (SELECT COUNT(*) FROM <source> WHERE ... GROUP BY ... HAVING COUNT(*) < size)``."""
    inner = select.copy().select(exp.Count(this=exp.Star()), copy=False)
    groups = list(dict.fromkeys(builder.column(c) for c in query.group_by))
    if groups:
        inner = inner.group_by(*(column_ref(g, alias) for g in groups), copy=False)
    inner = inner.having(_group_size(exp.LT, size), copy=False)
    outer = exp.select(exp.alias_(exp.Count(this=exp.Star()), "suppressed", quoted=True)).from_(
        exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("small", quoted=True)))
    )
    return GovernedStatement(outer.limit(2, copy=False), limits.model_copy(update={"max_rows": 1}))


def next_cursor(compiled: CompiledQuery, rowset: RowSet) -> str | None:
    """The cursor of the page after ``rowset``, or None when it was the last page.

    A further page exists when the connector reports ``truncated`` or returned more than ``row_limit``
    rows; the cursor continues after the last row within ``row_limit``.
    """
    if compiled.pagination == "none" or not rowset.rows:
        return None
    if not rowset.truncated and len(rowset.rows) <= compiled.row_limit:
        return None
    shown = rowset.rows[: compiled.row_limit]
    if compiled.pagination == "offset":
        return encode_cursor(Cursor(compiled.shape, "offset", offset=compiled.offset + len(shown)))
    last = shown[-1]
    positions = [rowset.columns.index(key.column) for key in compiled.keys]
    return encode_cursor(Cursor(compiled.shape, "keyset", after=tuple(last[i] for i in positions)))


def _ordered(expression: exp.Expr, descending: bool) -> exp.Ordered:
    return exp.Ordered(this=expression, desc=descending, nulls_first=False)


def _keyset_predicate(keys: list[OrderKey], after: tuple[Any, ...], alias: str, order: list[exp.Ordered]) -> exp.Expr:
    """Rows strictly after ``after`` in the order ``keys`` (NULLs last in both directions)."""
    disjuncts: list[exp.Expr] = []
    equal_prefix: list[exp.Expr] = []
    for key, value in zip(keys, after, strict=True):
        col = column_ref(key.column, alias)
        if value is not None:
            compare = exp.LT if key.descending else exp.GT
            later: exp.Expr = compare(this=col.copy(), expression=literal(value))
            if key.nullable:
                later = exp.or_(later, exp.Is(this=col.copy(), expression=exp.null()))
            disjuncts.append(exp.and_(*equal_prefix, exp.paren(later)) if equal_prefix else exp.paren(later))
            equal_prefix.append(exp.EQ(this=col.copy(), expression=literal(value)))
        else:  # NULLs sort last: nothing is after a NULL on this key, only ties continue
            equal_prefix.append(exp.Is(this=col.copy(), expression=exp.null()))
    if not disjuncts:
        return exp.false()
    return exp.paren(exp.or_(*(exp.paren(d) for d in disjuncts)))


class _Builder:
    """Validation and expression building for one view."""

    def __init__(self, view: GovernedView, params: dict[str, Any] | None = None) -> None:
        self.view = view
        self.params = params  # None: values are inline literals

    def column(self, name: str) -> str:
        return resolve_column(name, self.view.columns, where=self.view.name)

    def filter(self, item: Filter, alias: str) -> exp.Expr:
        if isinstance(item, AllOf):
            return exp.paren(exp.and_(*(self.filter(f, alias) for f in item.all_of)))
        if isinstance(item, AnyOf):
            return exp.paren(exp.or_(*(self.filter(f, alias) for f in item.any_of)))
        return self.condition(item, alias)

    def refuse_aggregate_only(self, name: str, where: str) -> None:
        """Refuse ``name`` in a position that would read its raw values (``where``: the position)."""
        size = self.view.aggregate_only.get(name)
        if size is not None:
            raise InvalidRequestError(
                f"{name} is aggregate-only for you and cannot be used {where}: aggregate it (sum, avg, min, max, "
                f"count) with group_by; groups under {size} rows are suppressed"
            )

    def condition(self, cond: Condition, alias: str) -> exp.Expr:
        name = self.column(cond.column)
        self.refuse_aggregate_only(name, "in a filter")
        col = column_ref(name, alias)
        values = [self.param(v) for v in self.values(name, cond)]
        if cond.op == "is_null":
            return exp.Is(this=col, expression=exp.null())
        if cond.op == "is_not_null":
            return exp.not_(exp.Is(this=col, expression=exp.null()))
        if cond.op in ("in", "not_in"):
            found = exp.In(this=col, expressions=values)
            return exp.not_(found) if cond.op == "not_in" else found
        if cond.op == "between":
            low, high = values
            return exp.Between(this=col, low=low, high=high)
        if cond.op == "like":
            like = exp.Like(this=col, expression=values[0])
            return exp.Escape(this=like, expression=exp.Literal.string("\\"))
        return _COMPARISONS[cond.op](this=col, expression=values[0])

    def bind(self, item: Filter) -> None:
        """Check and collect the values of ``item`` in the order :meth:`filter` places them."""
        if isinstance(item, AllOf | AnyOf):
            for inner in item.all_of if isinstance(item, AllOf) else item.any_of:
                self.bind(inner)
            return
        name = self.column(item.column)
        self.refuse_aggregate_only(name, "in a filter")
        for value in self.values(name, item):
            self.param(value)

    def param(self, value: Any) -> exp.Expr:
        """``value`` in the statement: an inline literal, or the next placeholder (its value kept)."""
        if self.params is None:
            return literal(value)
        name = f"p{len(self.params)}"
        self.params[name] = bindable(value)
        return exp.Placeholder(this=name)

    def values(self, name: str, cond: Condition) -> list[Any]:
        """The checked values ``cond`` compares ``name`` with, in statement order."""
        if cond.op in ("is_null", "is_not_null"):
            return []
        if cond.op in ("in", "not_in", "between"):
            assert isinstance(cond.value, list)
            return [self.value(name, v, cond.op) for v in cond.value]
        if cond.op == "like":
            if self.view.column_type(name) != "string" or not isinstance(cond.value, str):
                raise InvalidRequestError(
                    f"'like' needs a string column and a string pattern such as '%abc%'; "
                    f"{name!r} is {self.view.column_type(name)}"
                )
            pattern = self.value(name, cond.value, cond.op)
            if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
                raise InvalidRequestError("a 'like' pattern cannot end with a lone backslash; write \\\\ for one")
            return [pattern]
        return [self.value(name, cond.value, cond.op)]

    def value(self, name: str, value: Any, op: str) -> Any:
        """``value`` checked against the column's visible type (masked columns are strings)."""
        kind = self.view.column_type(name)
        masked = " (masked for you, so compare with masked values)" if name in self.view.masked else ""
        if value is None:
            raise InvalidRequestError(f"op {op!r} on {name!r} cannot take null; use is_null / is_not_null")
        if kind == "string" and isinstance(value, str):
            return value
        if kind in _NUMERIC and isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind in _TEMPORAL and isinstance(value, str):
            try:
                return _TEMPORAL[kind](value)
            except ValueError:
                pass
        examples = {"date": "'2024-05-01'", "timestamp": "'2024-05-01 12:00:00'", "time": "'12:30:00'"}
        wanted = {"string": "a string", "boolean": "true or false", **dict.fromkeys(_NUMERIC, "a number")}
        hint = wanted.get(kind) or (f"an ISO 8601 string like {examples[kind]}" if kind in examples else "")
        if not hint:
            raise InvalidRequestError(f"column {name!r} is {kind}; only is_null / is_not_null apply to it")
        raise InvalidRequestError(f"column {name!r} is {kind}{masked}; {value!r} does not fit, give {hint}")

    def orderable(self, name: str) -> bool:
        return self.view.column_type(name) not in _UNORDERABLE

    def rows(
        self, query: Query, select: exp.Select, alias: str
    ) -> tuple[list[str], list[exp.Ordered], list[OrderKey], Literal["keyset", "offset", "none"]]:
        if query.columns:
            columns = list(dict.fromkeys(self.column(c) for c in query.columns))
            for name in columns:
                self.refuse_aggregate_only(name, "as a column")
        else:  # the default projection leaves aggregate-only columns out
            columns = [c for c in self.view.columns if c not in self.view.aggregate_only]
            if not columns:
                raise InvalidRequestError(
                    f"every column of {self.view.name} is aggregate-only for you: aggregate them (sum, avg, min, "
                    "max, count) with group_by"
                )
        select.select(*(column_ref(c, alias) for c in columns), copy=False)
        keys: list[OrderKey] = []
        for item in query.order_by:
            name = self.column(item.column)
            self.refuse_aggregate_only(name, "in order_by")
            if not self.orderable(name):
                raise InvalidRequestError(f"cannot order by {name!r}: it is {self.view.column_type(name)}")
            if all(k.column != name for k in keys):
                keys.append(OrderKey(name, item.direction == "desc", self._nullable(name)))
        pk = self.view.contract.primary_key
        one_to_one = all(
            self.view.masked.get(c, "hash") == "hash" and self.orderable(c) and c not in self.view.aggregate_only
            for c in pk
        )
        if pk and one_to_one:
            keys += [OrderKey(c, False, self._nullable(c)) for c in pk if all(k.column != c for k in keys)]
        pagination: Literal["keyset", "offset"] = "offset"
        if pk and one_to_one and all(k.column in columns for k in keys):
            pagination = "keyset"
        else:  # offset pages: make the order total over what the caller sees
            keys += [OrderKey(c, False) for c in columns if self.orderable(c) and all(k.column != c for k in keys)]
        order = [_ordered(column_ref(k.column, alias), k.descending) for k in keys]
        return columns, order, keys, pagination

    def _nullable(self, name: str) -> bool:
        column = self.view.contract.column(name)
        return column is None or column.nullable or self.view.masked.get(name) == "null"

    def aggregate(
        self, query: Query, select: exp.Select, alias: str
    ) -> tuple[list[str], list[exp.Ordered], list[OrderKey], Literal["keyset", "offset", "none"]]:
        groups = list(dict.fromkeys(self.column(c) for c in query.group_by))
        for name in groups:
            self.refuse_aggregate_only(name, "in group_by")
        outputs: dict[str, exp.Expr] = {g: column_ref(g, alias) for g in groups}
        for agg in query.aggregates:
            name = agg.output_name
            if name in outputs:
                raise InvalidRequestError(
                    f"output name {name!r} is used twice; give each aggregate a distinct 'as' name"
                )
            outputs[name] = self.aggregate_expression(agg, alias)
        select.select(*(column_ref(g, alias) for g in groups), copy=False)
        select.select(
            *(exp.alias_(outputs[a.output_name], a.output_name, quoted=True) for a in query.aggregates), copy=False
        )
        if groups:
            select.group_by(*(column_ref(g, alias) for g in groups), copy=False)
        order: list[exp.Ordered] = []
        ordered: set[str] = set()
        for item in query.order_by:
            name = item.column
            if name not in outputs:
                raise InvalidRequestError(
                    f"cannot order an aggregate query by {item.column!r}; order by one of {', '.join(outputs)}"
                )
            if name not in ordered:
                order.append(_ordered(outputs[name].copy(), item.direction == "desc"))
                ordered.add(name)
        order += [_ordered(column_ref(g, alias), False) for g in groups if g not in ordered and self.orderable(g)]
        return list(outputs), order, [], "offset" if groups else "none"

    def aggregate_expression(self, agg: Aggregate, alias: str) -> exp.Expr:
        if agg.column is None:
            return exp.Count(this=exp.Star())
        name = self.column(agg.column)
        kind = self.view.column_type(name)
        col = column_ref(name, alias)
        if agg.fn == "count":
            return exp.Count(this=col)
        if agg.fn == "count_distinct":
            return exp.Count(this=exp.Distinct(expressions=[col]))
        if agg.fn in ("sum", "avg") and kind not in _NUMERIC:
            masked = ", masked for you" if name in self.view.masked else ""
            raise InvalidRequestError(
                f"{agg.fn} needs a numeric column; {name!r} is {kind}{masked}: use count, count_distinct, min or max"
            )
        if agg.fn in ("min", "max") and (kind in _UNORDERABLE or kind == "boolean"):
            raise InvalidRequestError(f"{agg.fn} does not apply to {name!r} ({kind}); use count or count_distinct")
        functions: dict[str, type[exp.Func]] = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}
        return functions[agg.fn](this=col)


def condition_on(view: GovernedView, condition: Condition, alias: str) -> exp.Expr:
    """One caller condition on a column of ``view`` read through ``alias``, checked and typed as in
    :func:`compile_query` (masked columns compare masked values). :mod:`catalog.metrics` filters with it.

    Raises:
        InvalidRequestError: unknown column, or a value that does not fit the column's visible type.
    """
    return _Builder(view).condition(condition, alias)
