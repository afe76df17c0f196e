"""Contract checks of the semantic layer: metric expressions, metric filters, derived metrics, relationships.

A metric is either an *aggregate* (``sum(amount)``, ``count(distinct order_id)``) over the product's
own columns, optionally narrowed by a ``filter`` condition over those columns, or *derived*: an
expression over other metrics of the same product by name (``revenue / order_count``). Expressions are
operator-authored, but they still end up inside statements we print, so they are held to the node and
function allow-lists of ``run_sql`` (:func:`catalog._sqlallow.check_node`) and may not contain
subqueries, window functions or nested aggregates. Derived metrics may not form a cycle.

Pure functions over a contract; :meth:`catalog.contract.ProductContract.reference_problems` reports what
they find at the field path of each problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from catalog._sqlallow import check_node
from catalog.errors import SQLRefusedError
from catalog.suggest import close_matches

if TYPE_CHECKING:
    from catalog.contract import Metric, ProductContract

__all__ = ["TIME_COLUMN_TYPES", "derived_parts", "is_derived", "metric_problems", "relationship_problems"]

#: Column types a time dimension may sit on.
TIME_COLUMN_TYPES = frozenset({"date", "timestamp"})
_FORBIDDEN: tuple[type[exp.Expr], ...] = (exp.Query, exp.Subquery, exp.Window, exp.Table, exp.Star)


def _parse(text: str, *, condition: bool = False) -> exp.Expr:
    """``text`` as one SQL expression (a condition when ``condition``).

    Raises:
        ValueError: it does not parse, or holds nodes or functions the allow-lists refuse.
    """
    try:
        parsed = sqlglot.parse_one(text, into=exp.Condition) if condition else sqlglot.parse_one(text)
    except ParseError as exc:
        detail = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ValueError(f"not a valid SQL {'condition' if condition else 'expression'}: {detail}") from exc
    for node in parsed.walk():
        if isinstance(node, exp.Star) and isinstance(node.parent, exp.Count):
            continue
        if isinstance(node, _FORBIDDEN):
            raise ValueError("subqueries, window functions and * (outside count(*)) are not allowed")
        try:
            check_node(node)
        except SQLRefusedError as exc:
            raise ValueError(exc.message.split(". ")[0]) from None
    for column in parsed.find_all(exp.Column):
        if column.table:
            raise ValueError(f"write plain column names, not {column.sql()!r}")
    return parsed


def is_derived(metric: Metric) -> bool:
    """True when the metric's expression aggregates nothing itself (it combines other metrics)."""
    try:
        return sqlglot.parse_one(metric.expr).find(exp.AggFunc) is None
    except ParseError:
        return False


def derived_parts(metric: Metric) -> list[str]:
    """The metric names a derived metric's expression reads, in order of first use."""
    return list(dict.fromkeys(c.name for c in sqlglot.parse_one(metric.expr).find_all(exp.Column)))


def metric_problems(contract: ProductContract) -> list[tuple[str, str]]:
    """Every problem of the contract's metrics as ``(field path, message)``."""
    columns = set(contract.column_names)
    metrics = {m.name: m for m in contract.metrics}
    problems: list[tuple[str, str]] = []
    derived: dict[str, list[str]] = {}
    for i, metric in enumerate(contract.metrics):
        path = f"metrics[{i}]"
        try:
            parsed = _parse(metric.expr)
        except ValueError as exc:
            problems.append((f"{path}.expr", str(exc)))
            continue
        refs = [c.name for c in parsed.find_all(exp.Column)]
        if parsed.find(exp.AggFunc) is None:
            parts = list(dict.fromkeys(refs))
            plain = [r for r in parts if r not in metrics and r in columns]
            unknown = [r for r in parts if r not in metrics and r not in columns]
            if plain or not parts:
                problems.append((f"{path}.expr", "must aggregate, e.g. sum(amount) or count(*)"))
            for name in unknown:
                close = close_matches(name, list(metrics), ignore_case=True)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    (f"{path}.expr", f"unknown metric {name!r} in a derived metric{hint} metrics are {sorted(metrics)}")
                )
            if metric.filter is not None:
                problems.append((f"{path}.filter", "a derived metric takes the filters of its parts; filter those"))
            derived[metric.name] = [p for p in parts if p in metrics]
        else:
            problems += _aggregate_problems(parsed, f"{path}.expr", columns, contract.column_names)
        if metric.filter is not None:
            problems += _filter_problems(metric.filter, f"{path}.filter", columns, contract.column_names)
    cycle = _cycle(derived)
    if cycle:
        problems.append(("metrics", f"derived metrics form a cycle: {' -> '.join(cycle)}"))
    names = [m.name for m in contract.metrics]
    if len(set(names)) != len(names):
        problems.append(("metrics", "duplicate metric names"))
    return problems


def _unknown_columns(refs: list[str], columns: set[str], declared: list[str]) -> list[str]:
    return [f"unknown column {r!r}; declared columns are {declared}" for r in dict.fromkeys(refs) if r not in columns]


def _aggregate_problems(parsed: exp.Expr, path: str, columns: set[str], declared: list[str]) -> list[tuple[str, str]]:
    problems = [(path, m) for m in _unknown_columns([c.name for c in parsed.find_all(exp.Column)], columns, declared)]
    for agg in parsed.find_all(exp.AggFunc):
        if any(inner is not agg for inner in agg.find_all(exp.AggFunc)):
            problems.append((path, "aggregates cannot be nested"))
            break
    problems += [
        (path, f"column {c.name!r} must sit inside an aggregate, e.g. sum({c.name})")
        for c in parsed.find_all(exp.Column)
        if c.find_ancestor(exp.AggFunc) is None
    ]
    return problems


def _filter_problems(text: str, path: str, columns: set[str], declared: list[str]) -> list[tuple[str, str]]:
    try:
        parsed = _parse(text, condition=True)
    except ValueError as exc:
        return [(path, str(exc))]
    problems = [(path, m) for m in _unknown_columns([c.name for c in parsed.find_all(exp.Column)], columns, declared)]
    if parsed.find(exp.AggFunc):
        problems.append((path, "a metric filter is a row condition, e.g. status = 'delivered'; it cannot aggregate"))
    return problems


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """One cycle among derived metrics (as a path that returns to its start), or an empty list."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done or name not in edges:
            return []
        for part in edges[name]:
            found = visit(part, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for start in edges:
        found = visit(start, [])
        if found:
            return found
    return []


def relationship_problems(contract: ProductContract) -> list[tuple[str, str]]:
    """Problems of ``relationships:`` that the contract alone shows (the related side is checked at query time)."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, rel in enumerate(contract.relationships):
        path = f"relationships[{i}]"
        if rel.product == contract.name:
            problems.append((f"{path}.product", "a product cannot relate to itself"))
        if rel.product in seen:
            problems.append(
                (f"{path}.product", f"{rel.product} is related twice; declare one relationship per product")
            )
        seen.add(rel.product)
        problems += [
            (f"{path}.on", f"unknown column {own!r}; declared columns are {contract.column_names}")
            for own in rel.on
            if own not in contract.column_names
        ]
    return problems
