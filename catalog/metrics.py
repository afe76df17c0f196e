"""Compile a metrics request into one governed SELECT: the semantic layer's only way to a store.

For each product whose metrics are asked for (its *fact* product), one branch::

    SELECT <bucket or column> AS "_d0", ...,                       -- group-by dimensions
           SUM(CASE WHEN <metric filter> THEN "p0"."amount" END) AS "_m0", ...
    FROM (<governed source of the fact product>) AS "p0"
    LEFT JOIN (<governed source of a related product>) AS "p1" ON "p0"."customer_id" = "p1"."customer_id"
    WHERE <conditions on dimensions> AND <time range, half-open>
    GROUP BY <the dimension expressions>
    [HAVING COUNT(*) >= n]                                         -- aggregate-only columns read

Every product is read through its governed source (:func:`catalog.governed_source.governed_source`): masks
and row filters of *all* of them apply, and the relationship join runs over governed sources, never
raw tables. A metric's ``filter`` goes inside its aggregate as ``CASE WHEN`` (SQLite, PostgreSQL and
DuckDB evaluate it alike; ``count(*)`` becomes ``COUNT(CASE WHEN f THEN 1 END)``). A derived metric is
its expression with each named part replaced by that part's aggregate. Every division divides
doubles and turns a zero divisor into NULL (``CAST(a AS DOUBLE) / NULLIF(CAST(b AS DOUBLE), 0)``), so
``/`` means the same on every store and never fails.

Metric expressions and filters come from the contract, checked when it was validated
(:mod:`catalog._metric_rules`); they are parsed here in the store's dialect, their columns bound to
the product's alias, and embedded as AST. What the caller sends — dimension names, conditions, the
time range — is resolved against the contracts and built as typed literals (:func:`condition_on`).

A metric whose expression or filter reads a column aggregate-only for the caller keeps groups of at
least ``min_group_size`` rows of the fact product (``HAVING COUNT(*) >= n``, the largest size among the
columns read); such a branch joins no related product (a join could multiply the rows counted), and
a dimension on an aggregate-only column can be neither grouped by nor filtered on.

Metrics of several products become one branch each, stacked with ``UNION ALL`` and folded by an
outer ``GROUP BY`` over the dimensions (``MAX`` of each metric: each has one value per group), so no
product's rows multiply another's. Output columns are named ``_d<i>``/``_m<j>`` in SQL and given the
requested names by :class:`CompiledMetrics`; the statement fetches ``limit + 1`` rows and carries its
limits like :class:`~catalog.compile.CompiledQuery`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from catalog._metric_rules import TIME_COLUMN_TYPES, is_derived
from catalog._sqlbuild import column_ref
from catalog.compile import condition_on
from catalog.contract import Dimension, Metric, ProductContract, Relationship
from catalog.errors import InvalidRequestError
from catalog.governed_source import GOVERNED, GovernedMark, GovernedStatement, governed_source
from catalog.metric_query import MetricsRequest
from catalog.policy import GovernedView
from catalog.query import Condition, Limits, RowSet
from catalog.suggest import close_matches
from catalog.timegrain import bucket, bucket_text

__all__ = [
    "CompiledMetrics",
    "ResolvedDimension",
    "ResolvedMetric",
    "available_dimensions",
    "compile_metrics",
    "explain_sql",
    "fact_products",
    "related_products",
    "split_metric_name",
]

_DOUBLE = exp.DataType.build("double")


@dataclass(frozen=True)
class ResolvedMetric:
    """A requested metric: the name it was asked by (its output column), its product and definition."""

    name: str
    product: str
    metric: Metric


@dataclass(frozen=True)
class ResolvedDimension:
    """A requested dimension: the name it was asked by, the product whose column it reads, its grain."""

    name: str
    product: str
    dimension: Dimension
    grain: str | None = None


@dataclass(frozen=True)
class CompiledMetrics(GovernedStatement):
    """One governed SELECT of a :class:`~catalog.metric_query.MetricsRequest`, and what it resolved to."""

    columns: list[str]
    metrics: tuple[ResolvedMetric, ...]
    dimensions: tuple[ResolvedDimension, ...]
    time_dimension: ResolvedDimension | None
    #: The smallest group returned when a metric reads aggregate-only columns (``HAVING COUNT(*) >= n``),
    #: and those columns.
    min_group_size: int | None = None
    aggregate_only_read: tuple[str, ...] = ()

    @property
    def products(self) -> list[str]:
        """Every product the statement reads (fact products first)."""
        names = [m.product for m in self.metrics] + [d.product for d in self.dimensions]
        if self.time_dimension is not None:
            names.append(self.time_dimension.product)
        return list(dict.fromkeys(names))

    def rows(self, rowset: RowSet) -> list[list[Any]]:
        """The result rows as the caller gets them: at most ``limits.max_rows``, time buckets as ISO text."""
        grains = [d.grain for d in self.dimensions] + [None] * len(self.metrics)
        return [
            [bucket_text(v, g) if g else v for v, g in zip(row, grains, strict=True)]
            for row in rowset.rows[: self.limits.max_rows]
        ]


def split_metric_name(name: str, product: str | None) -> tuple[str, str]:
    """``(product, metric)`` of ``shop.orders.revenue``, or of ``revenue`` with ``product``.

    Raises:
        InvalidRequestError: an unqualified name without ``product``, or a name of the wrong shape.
    """
    parts = name.split(".")
    if len(parts) == 3:
        return f"{parts[0]}.{parts[1]}", parts[2]
    if len(parts) == 1 and product:
        return product, name
    if len(parts) == 1:
        raise InvalidRequestError(f"say which product {name!r} belongs to: write <product>.{name} or pass product")
    raise InvalidRequestError(f"metric {name!r}: write <domain>.<product>.<metric>, e.g. shop.orders.order_count")


def fact_products(request: MetricsRequest) -> list[str]:
    """The products whose metrics ``request`` asks for, in order of first mention.

    Raises:
        InvalidRequestError: as :func:`split_metric_name`.
    """
    return list(dict.fromkeys(split_metric_name(m, request.product)[0] for m in request.metrics))


def _dimension_names(request: MetricsRequest) -> list[str]:
    names = [g.dimension for g in request.group_by] + [c.dimension for c in request.where]
    if request.time_range is not None and request.time_range.dimension:
        names.append(request.time_range.dimension)
    return names


def related_products(request: MetricsRequest) -> list[str]:
    """Products other than the fact products whose dimensions ``request`` names (``shop.customers.country``)."""
    facts = set(fact_products(request))
    named = (n.rsplit(".", 1)[0] for n in _dimension_names(request) if "." in n)
    return [p for p in dict.fromkeys(named) if p not in facts]


def available_dimensions(
    contract: ProductContract, related: Mapping[str, ProductContract]
) -> list[tuple[str, str, Dimension]]:
    """``(name to ask by, product, dimension)`` for the product's own dimensions and those of the related
    products given (by name; unreadable ones are left out by the caller)."""
    found = [(d.name, contract.name, d) for d in contract.dimensions]
    for rel in contract.relationships:
        other = related.get(rel.product)
        if other is not None:
            found += [(f"{other.name}.{d.name}", other.name, d) for d in other.dimensions]
    return found


def compile_metrics(
    request: MetricsRequest, views: Mapping[str, GovernedView], *, limits: Limits, dialect: str, hash_salt: str
) -> CompiledMetrics:
    """One governed SELECT answering ``request``; ``views`` holds every fact and related product by name.

    Raises:
        InvalidRequestError: unknown metric or dimension (with a close match and what exists), a grain the
            dimension does not offer, a condition value that does not fit, a related product the fact
            product has no relationship to, a metric that reads a column masked for the caller.
    """
    resolved: list[ResolvedMetric] = []
    for name in request.metrics:
        product, metric_name = split_metric_name(name, request.product)
        contract = views[product].contract
        metric = contract.metric(metric_name)
        if metric is None:
            names = [m.name for m in contract.metrics]
            close = close_matches(metric_name, names, ignore_case=True)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            listing = ", ".join(names) if names else "none"
            raise InvalidRequestError(f"unknown metric {metric_name!r} of {product}{hint} its metrics are {listing}")
        resolved.append(ResolvedMetric(name, product, metric))
    if len({m.name for m in resolved}) != len(resolved):
        raise InvalidRequestError("each metric can be asked for once")
    facts = list(dict.fromkeys(m.product for m in resolved))
    branches = [_Branch(views[f], views, dialect=dialect, hash_salt=hash_salt) for f in facts]
    dimensions = [branches[0].dimension(g.dimension, g.grain) for g in request.group_by]
    for branch in branches[1:]:
        for g in request.group_by:
            branch.dimension(g.dimension, g.grain)  # every fact product must offer every dimension
    if len({d.name for d in dimensions}) != len(dimensions):
        raise InvalidRequestError("group by each dimension once")
    time_dimension = branches[0].time_dimension(request) if request.time_range else None
    selects = [
        branch.select(request, [(i, m) for i, m in enumerate(resolved) if m.product == branch.fact.name], len(resolved))
        for branch in branches
    ]
    if len(selects) == 1:
        statement = selects[0]
    else:
        stacked: exp.Query = selects[0]
        for select in selects[1:]:
            stacked = exp.union(stacked, select, distinct=False)
        dims = [exp.column(f"_d{i}", quoted=True) for i in range(len(dimensions))]
        folded = [
            exp.alias_(exp.Max(this=exp.column(f"_m{j}", quoted=True)), f"_m{j}", quoted=True)
            for j in range(len(resolved))
        ]
        statement = exp.select(*[d.copy() for d in dims], *folded).from_(exp.alias_(exp.paren(stacked), "_u"))
        if dims:
            statement = statement.group_by(*[d.copy() for d in dims], copy=False)
    columns = [d.name for d in dimensions] + [m.name for m in resolved]
    aliases = {name: f"_d{i}" for i, name in enumerate(c for c in columns[: len(dimensions)])}
    aliases |= {m.name: f"_m{j}" for j, m in enumerate(resolved)}
    order: list[exp.Ordered] = []
    for item in request.order_by:
        if item.name not in aliases:
            raise InvalidRequestError(f"cannot order by {item.name!r}; order by one of {', '.join(columns)}")
        order.append(_ordered(aliases[item.name], item.direction == "desc"))
    ordered = {o.this.name for o in order}
    order += [_ordered(f"_d{i}", False) for i in range(len(dimensions)) if f"_d{i}" not in ordered]
    if order:
        statement = statement.order_by(*order, copy=False)
    row_limit = min(request.limit or limits.max_rows, limits.max_rows)
    statement = statement.limit(row_limit + 1, copy=False)
    run_limits = limits.model_copy(update={"max_rows": row_limit})
    read = tuple(sorted({c for b in branches for c in b.aggregate_only_read}))
    sizes = [b.min_group_size for b in branches if b.min_group_size is not None]
    return CompiledMetrics(
        statement,
        run_limits,
        columns,
        tuple(resolved),
        tuple(dimensions),
        time_dimension,
        max(sizes) if sizes else None,
        read,
    )


def explain_sql(compiled: CompiledMetrics, dialect: str) -> str:
    """The statement as the store runs it, each governed source shown by its product's name.

    The bodies of governed sources (mask expressions with the deployment's salt, row filter text) stay
    private, as ``describe_product`` keeps row filters private.
    """

    def shown(node: exp.Expr) -> exp.Expr:
        mark = node.meta.get(GOVERNED) if isinstance(node, exp.Subquery) else None
        if isinstance(mark, GovernedMark):
            table = exp.Table(this=exp.to_identifier(f"governed {mark.product}", quoted=True))
            alias = node.args.get("alias")
            table.set("alias", alias.copy() if isinstance(alias, exp.Expr) else None)
            return table
        return node

    return compiled.statement.transform(shown).sql(dialect=dialect, pretty=True)


def _ordered(alias: str, descending: bool) -> exp.Ordered:
    return exp.Ordered(this=exp.column(alias, quoted=True), desc=descending, nulls_first=False)


def _parse(text: str, dialect: str, product: str, *, condition: bool = False) -> exp.Expr:
    try:
        if condition:
            return sqlglot.parse_one(text, read=dialect, into=exp.Condition)
        return sqlglot.parse_one(text, read=dialect)
    except ParseError as exc:
        raise InvalidRequestError(
            f"the contract of {product} has a metric that does not parse as {dialect}: {exc}"
        ) from exc


class _Branch:
    """The SELECT over one fact product: its governed source, related products joined on demand."""

    def __init__(self, fact: GovernedView, views: Mapping[str, GovernedView], *, dialect: str, hash_salt: str) -> None:
        self.fact = fact
        self.views = views
        self.dialect = dialect
        self.hash_salt = hash_salt
        self.aliases: dict[str, str] = {fact.name: "p0"}
        self.joins: list[tuple[exp.Subquery, exp.Expr]] = []
        #: aggregate-only columns of the fact product its metrics read
        self.aggregate_only_read: set[str] = set()

    @property
    def min_group_size(self) -> int | None:
        return max((self.fact.aggregate_only[c] for c in self.aggregate_only_read), default=None)

    # -- names -------------------------------------------------------------------------------------

    def _source(self, view: GovernedView, alias: str) -> exp.Subquery:
        name = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
        return governed_source(view, dialect=self.dialect, hash_salt=self.hash_salt, alias=name)

    def _alias(self, product: str) -> str:
        """The alias ``product`` is read through in this branch (a related product is joined once)."""
        if product in self.aliases:
            return self.aliases[product]
        rel = next((r for r in self.fact.contract.relationships if r.product == product), None)
        if rel is None or product not in self.views:
            related = ", ".join(r.product for r in self.fact.contract.relationships) or "none"
            raise InvalidRequestError(
                f"{self.fact.name} has no relationship to {product}; its related products are: {related}"
            )
        alias = self.aliases[product] = f"p{len(self.aliases)}"
        self.joins.append((self._source(self.views[product], alias), self._join_condition(rel, alias)))
        return alias

    def _join_condition(self, rel: Relationship, alias: str) -> exp.Expr:
        other = self.views[rel.product].contract
        pairs = []
        for own, theirs in rel.on.items():
            if other.column(theirs) is None:
                raise InvalidRequestError(
                    f"the relationship of {self.fact.name} to {other.name} joins on {theirs!r}, which "
                    f"{other.name} does not have; its columns are {', '.join(other.column_names)}"
                )
            if own in self.fact.aggregate_only or theirs in self.views[rel.product].aggregate_only:
                raise InvalidRequestError(
                    f"the relationship of {self.fact.name} to {other.name} joins on an aggregate-only column "
                    f"({own} = {theirs}); its dimensions cannot be used by you"
                )
            pairs.append(exp.EQ(this=column_ref(own, "p0"), expression=column_ref(theirs, alias)))
        return exp.and_(*pairs)

    def _related(self) -> dict[str, ProductContract]:
        return {n: v.contract for n, v in self.views.items() if n != self.fact.name}

    def dimension(self, name: str, grain: str | None = None) -> ResolvedDimension:
        """``name`` resolved for this fact product, with its grain checked (time dimensions default to
        their first declared grain).

        Raises:
            InvalidRequestError: unknown dimension, no relationship to its product, a grain that does not fit.
        """
        product, short = name.rsplit(".", 1) if "." in name else (self.fact.name, name)
        if product != self.fact.name:
            self._alias(product)  # the relationship must exist
        contract = self.views[product].contract
        dim = contract.dimension(short)
        if dim is None:
            known = [n for n, _, _ in available_dimensions(self.fact.contract, self._related())]
            by_short = {k.rsplit(".", 1)[-1]: k for k in reversed(known)}
            close = close_matches(name, known, ignore_case=True) or [
                by_short[c] for c in close_matches(short, list(by_short), ignore_case=True)
            ]
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            listing = ", ".join(known) if known else "none"
            raise InvalidRequestError(
                f"unknown dimension {name!r} for {self.fact.name}{hint} its dimensions are {listing}"
            )
        size = self.views[product].aggregate_only.get(dim.column)
        if size is not None:
            raise InvalidRequestError(
                f"dimension {name!r} reads {dim.column}, which is aggregate-only for you: it cannot be grouped by "
                f"or filtered on; metrics over it are returned for groups of at least {size} rows"
            )
        if dim.kind == "categorical":
            if grain is not None:
                raise InvalidRequestError(f"dimension {name!r} is categorical; drop the grain {grain!r}")
            return ResolvedDimension(name, product, dim)
        column = contract.column(dim.column)
        if column is None or column.type not in TIME_COLUMN_TYPES:
            raise InvalidRequestError(f"time dimension {name!r} of {product} is not on a date or timestamp column")
        if dim.column in self.views[product].masked:
            raise InvalidRequestError(f"time dimension {name!r} is masked for you: its values cannot be bucketed")
        chosen = grain or dim.time_grains[0]
        if chosen not in dim.time_grains:
            raise InvalidRequestError(
                f"dimension {name!r} has grains {', '.join(dim.time_grains)}; {chosen!r} is not one of them"
            )
        return ResolvedDimension(name, product, dim, chosen)

    def time_dimension(self, request: MetricsRequest) -> ResolvedDimension:
        """The time dimension the request's time range bounds.

        Raises:
            InvalidRequestError: none named or grouped by, and the product has no single time dimension.
        """
        assert request.time_range is not None
        if request.time_range.dimension:
            resolved = self.dimension(request.time_range.dimension)
            if resolved.grain is None:
                raise InvalidRequestError(f"time_range needs a time dimension; {resolved.name!r} is categorical")
            return resolved
        for g in request.group_by:
            resolved = self.dimension(g.dimension, g.grain)
            if resolved.grain is not None:
                return resolved
        own = [d for d in self.fact.contract.dimensions if d.kind == "time"]
        if len(own) == 1:
            return self.dimension(own[0].name)
        names = ", ".join(d.name for d in own) or "none"
        raise InvalidRequestError(f"say which time dimension time_range bounds (time_range.dimension): {names}")

    # -- the statement -------------------------------------------------------------------------------

    def _column(self, resolved: ResolvedDimension) -> exp.Column:
        return column_ref(resolved.dimension.column, self._alias(resolved.product))

    def select(self, request: MetricsRequest, metrics: Sequence[tuple[int, ResolvedMetric]], width: int) -> exp.Select:
        """This branch's SELECT: the request's dimensions and conditions, its own metrics at their positions
        (``_m<j>``) and NULL for the metrics of other branches."""
        dims: list[exp.Expr] = []
        for g in request.group_by:
            resolved = self.dimension(g.dimension, g.grain)
            column = self._column(resolved)
            if resolved.grain:
                declared = self.views[resolved.product].contract.column(resolved.dimension.column)
                dated = declared is not None and declared.type == "date"
                dims.append(bucket(column, resolved.grain, dialect=self.dialect, date=dated))
            else:
                dims.append(column)
        conditions = []
        for cond in request.where:
            resolved = self.dimension(cond.dimension)
            view = self.views[resolved.product]
            conditions.append(
                condition_on(view, cond.on_column(resolved.dimension.column), self._alias(resolved.product))
            )
        if request.time_range is not None:
            resolved = self.time_dimension(request)
            view, alias = self.views[resolved.product], self._alias(resolved.product)
            name, start, end = resolved.dimension.column, request.time_range.start, request.time_range.end
            if start is not None:
                conditions.append(condition_on(view, Condition(column=name, op=">=", value=start), alias))
            if end is not None:
                conditions.append(condition_on(view, Condition(column=name, op="<", value=end), alias))
        mine = dict(metrics)
        outputs = [
            exp.alias_(self._metric(mine[j].metric) if j in mine else exp.null(), f"_m{j}", quoted=True)
            for j in range(width)
        ]
        select = exp.select(*(exp.alias_(d, f"_d{i}", quoted=True) for i, d in enumerate(dims)), *outputs)
        select = select.from_(self._source(self.fact, "p0"), copy=False)
        for source, on in self.joins:
            select = select.join(source, on=on, join_type="left", copy=False)
        if conditions:
            select = select.where(exp.and_(*conditions), copy=False)
        if dims:
            select = select.group_by(*(d.copy() for d in dims), copy=False)
        size = self.min_group_size
        if size is not None:
            if self.joins:  # COUNT(*) would count joined rows, not the fact product's
                raise InvalidRequestError(
                    f"metrics over aggregate-only columns of {self.fact.name} "
                    f"({', '.join(sorted(self.aggregate_only_read))}) cannot be grouped or filtered by related "
                    "products' dimensions; use the product's own dimensions"
                )
            select = select.having(
                exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(size)), copy=False
            )
        return select

    def _metric(self, metric: Metric, seen: tuple[str, ...] = ()) -> exp.Expr:
        """A metric's SQL over this branch's fact product: filters inside aggregates, parts substituted,
        divisions guarded."""
        contract = self.fact.contract
        if metric.name in seen:  # the contract refuses cycles; never recurse forever on a stale one
            raise InvalidRequestError(f"derived metrics of {contract.name} form a cycle through {metric.name!r}")
        parsed = _parse(metric.expr, self.dialect, contract.name)
        if is_derived(metric):

            def part(node: exp.Expr) -> exp.Expr:
                if isinstance(node, exp.Column):
                    found = contract.metric(node.name)
                    if found is None:
                        raise InvalidRequestError(
                            f"metric {metric.name!r} of {contract.name} reads no metric {node.name!r}"
                        )
                    return exp.paren(self._metric(found, (*seen, metric.name)))
                return node

            expression = parsed.transform(part)
        else:
            expression = self._bound(parsed, metric)
            if metric.filter is not None:
                parsed_filter = _parse(metric.filter, self.dialect, contract.name, condition=True)
                condition = self._bound(parsed_filter, metric, in_aggregate=True)  # it goes inside every aggregate
                expression = _narrowed(expression, condition)
        for div in list(expression.find_all(exp.Div)):
            div.set("this", exp.Cast(this=div.this, to=_DOUBLE.copy()))
            div.set(
                "expression",
                exp.Nullif(this=exp.Cast(this=div.expression, to=_DOUBLE.copy()), expression=exp.Literal.number(0)),
            )
        return expression

    def _bound(self, parsed: exp.Expr, metric: Metric, *, in_aggregate: bool = False) -> exp.Expr:
        """``parsed`` with its columns read through the fact product's alias; masked columns refused
        except as what ``count`` counts; aggregate-only columns refused outside an aggregate (a filter is
        ``in_aggregate``) and noted, so the branch suppresses small groups."""
        masked = self.fact.masked

        def bind(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Column):
                if node.name in masked and not isinstance(node.find_ancestor(exp.AggFunc), exp.Count):
                    raise InvalidRequestError(
                        f"metric {metric.name!r} of {self.fact.name} reads {node.name!r}, which is masked for you; "
                        "ask the owner for access to the raw values"
                    )
                restricted = {c.lower(): c for c in self.fact.aggregate_only}
                if node.name.lower() in restricted:
                    aggregated = in_aggregate or node.find_ancestor(exp.AggFunc) is not None
                    if not aggregated or node.find_ancestor(exp.Window) is not None:
                        raise InvalidRequestError(
                            f"metric {metric.name!r} of {self.fact.name} reads {node.name!r} outside an aggregate, "
                            "and it is aggregate-only for you"
                        )
                    self.aggregate_only_read.add(restricted[node.name.lower()])
                return column_ref(node.name, "p0")
            return node

        return parsed.transform(bind)


def _narrowed(expression: exp.Expr, condition: exp.Expr) -> exp.Expr:
    """``expression`` with every aggregate reading only rows where ``condition`` holds (``CASE WHEN``)."""

    def only(value: exp.Expr) -> exp.Case:
        return exp.Case(ifs=[exp.If(this=condition.copy(), true=value)])

    def narrow(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.AggFunc):
            return node
        node = node.copy()
        argument = node.this
        if isinstance(node, exp.Count) and (argument is None or isinstance(argument, exp.Star)):
            node.set("this", only(exp.Literal.number(1)))
        elif isinstance(argument, exp.Distinct):
            argument.set("expressions", [only(e) for e in argument.expressions])
        else:
            node.set("this", only(argument))
            if isinstance(node.args.get("expression"), exp.Expr):
                node.set("expression", only(node.args["expression"]))
        return node

    return expression.transform(narrow)
