"""Semantic-layer commands: ``dataproducts metrics list`` and ``dataproducts metrics query``.

Both run the same use cases as the MCP tools (governed and audited as the principal given with
``--as``, default ``stdio_principal``) and print rich tables.

    dataproducts metrics list --product shop.orders
    dataproducts metrics query shop.orders.order_count shop.orders.delivery_rate \\
        --by order_time:month --by shop.customers.country --where "status in delivered,shipped" \\
        --from 2025-01-01 --to 2025-07-01 --as sam --explain
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from catalog.errors import ConfigError, InvalidRequestError
from catalog.metric_query import MetricsRequest
from catalog.principal import Principal
from catalog.query import Op
from servers.cli._common import console, reporting_errors, run_async, state
from servers.results import MetricsListing, MetricsResult
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["metrics_app", "parse_condition", "register_commands"]

metrics_app = typer.Typer(help="Governed metrics: list them, query them by dimensions and time grains.")
_OPS: tuple[str, ...] = Op.__args__  # type: ignore[attr-defined]
_LISTS = {"in", "not_in", "between"}

Principal_ = Annotated[str | None, typer.Option("--as", help="principal to ask as (default: stdio_principal)")]


def register_commands(app: typer.Typer) -> None:
    metrics_app.command("list")(reporting_errors(list_metrics))
    metrics_app.command("query")(reporting_errors(query_metrics))
    app.add_typer(metrics_app, name="metrics")


def _principal(settings: Settings, name: str | None) -> Principal:
    chosen = name or settings.stdio_principal
    if not chosen:
        raise ConfigError("say who is asking: --as PRINCIPAL, or set stdio_principal in dataproducts.yaml")
    return settings.principal(chosen)


def _scalar(text: str) -> Any:
    """A command-line value: JSON when it reads as JSON (numbers, true, "quoted"), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def parse_condition(text: str) -> dict[str, Any]:
    """``"status in delivered,shipped"`` -> ``{"dimension": "status", "op": "in", "value": [...]}``.

    Raises:
        InvalidRequestError: not ``DIMENSION OP [VALUE]`` with a known operator.
    """
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[1] not in _OPS:
        raise InvalidRequestError(
            f'--where {text!r}: write DIMENSION OP VALUE, e.g. "region = EU"; operators: {", ".join(_OPS)}'
        )
    dimension, op = parts[0], parts[1]
    if op in ("is_null", "is_not_null"):
        return {"dimension": dimension, "op": op}
    value = parts[2] if len(parts) == 3 else ""
    if op in _LISTS:
        return {"dimension": dimension, "op": op, "value": [_scalar(v.strip()) for v in value.split(",")]}
    return {"dimension": dimension, "op": op, "value": _scalar(value)}


def list_metrics(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Option(help="only this product")] = None,
    query: Annotated[str | None, typer.Option(help="words in metric names or descriptions")] = None,
    principal: Principal_ = None,
) -> None:
    """List the metrics you may query, with the dimensions and time grains they group by."""
    settings = state(ctx).settings
    who = _principal(settings, principal)

    async def run() -> MetricsListing:
        async with DataProductsService.open(settings) as service:
            return await service.list_metrics(who, query=query, product=product)

    listing = run_async(run)
    for item in listing.products:
        table = Table("metric", "unit", "filter", "derived", "description", title=item.product, title_justify="left")
        for m in item.metrics:
            table.add_row(m.name, m.unit or "", m.filter or "", "yes" if m.derived else "", m.description)
        console.print(table)
        dims = [f"{d.name} ({', '.join(d.time_grains)})" if d.time_grains else d.name for d in item.dimensions]
        console.print(f"  group by: {', '.join(dims) or 'nothing'}", highlight=False)
    if not listing.products:
        console.print("no metrics you may read match")


def query_metrics(
    ctx: typer.Context,
    metrics: Annotated[list[str], typer.Argument(help="product.metric names (or metric names with --product)")],
    by: Annotated[list[str] | None, typer.Option("--by", help="dimension[:grain], e.g. order_time:month")] = None,
    where: Annotated[list[str] | None, typer.Option(help='"DIMENSION OP VALUE", e.g. "status = delivered"')] = None,
    start: Annotated[str | None, typer.Option("--from", help="time range start (inclusive), ISO date")] = None,
    end: Annotated[str | None, typer.Option("--to", help="time range end (exclusive), ISO date")] = None,
    time_dimension: Annotated[str | None, typer.Option(help="the time dimension --from/--to bound")] = None,
    product: Annotated[str | None, typer.Option(help="product of unqualified metric names")] = None,
    order: Annotated[list[str] | None, typer.Option(help="output name, '-name' for descending")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    explain: Annotated[bool, typer.Option("--explain", help="print the SQL the store ran")] = False,
    principal: Principal_ = None,
) -> None:
    """Compute metrics grouped by dimensions (time grains hour..year), governed and audited."""
    settings = state(ctx).settings
    who = _principal(settings, principal)
    arguments: dict[str, Any] = {
        "metrics": metrics,
        "product": product,
        "group_by": [dict(zip(("dimension", "grain"), b.split(":", 1), strict=False)) for b in by or []],
        "where": [parse_condition(w) for w in where or []],
        "order_by": [{"name": o.lstrip("-"), "direction": "desc" if o.startswith("-") else "asc"} for o in order or []],
        "limit": limit,
    }
    if start or end or time_dimension:
        arguments["time_range"] = {"start": start, "end": end, "dimension": time_dimension}
    try:
        request = MetricsRequest.model_validate(arguments)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where_ = ".".join(str(p) for p in problem["loc"])
        raise InvalidRequestError(f"{where_}: {problem['msg']}") from None

    async def run() -> MetricsResult:
        async with DataProductsService.open(settings) as service:
            return await service.query_metrics(who, request, explain=explain)

    print_result(run_async(run))


def print_result(result: MetricsResult) -> None:
    units = {m.name: m.unit for m in result.metrics}
    grains = {d.name: d.grain for d in result.dimensions}
    table = Table(*(_heading(c, units.get(c), grains.get(c)) for c in result.columns))
    for row in result.rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    span = ""
    if result.time_range is not None:
        span = f"; {result.time_range.dimension} in [{result.time_range.start or '…'}, {result.time_range.end or '…'})"
    table.caption = f"{result.row_count} row(s){' (truncated)' if result.truncated else ''}{span}"
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.sql:
        console.rule("SQL")
        typer.echo(result.sql)


def _heading(column: str, unit: str | None, grain: str | None) -> str:
    if grain:
        return f"{column} ({grain})"
    return f"{column} [{unit}]" if unit else column
