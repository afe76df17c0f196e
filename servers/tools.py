"""What the MCP server offers: the tools and the ``product://{name}`` resource, one function each.

A tool is a typed async function: its name is the tool's name, its docstring the description, its
``Annotated`` parameters the input schema and its return model the output schema. The body is a few
lines over :class:`~servers.service.DataProductsService`, which it takes from the server's lifespan
through ``ctx``, for the caller :func:`~servers._audited_server.caller` names.

:data:`TOOLS` lists every tool once; :func:`servers.mcp.create_server` registers those the configured
allow-list names, in this order. Adding a tool is writing its function and listing it there (and
naming it in :data:`servers.settings.ToolName`, the names a configuration may allow).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, cast

from mcp.server.mcpserver import Context
from pydantic import Field

from catalog.metric_query import DimensionCondition, GroupBy, MetricOrder, MetricsRequest, TimeRange
from catalog.query import Aggregate, Filter, OrderBy, Query
from servers._audited_server import caller, refusing_invalid_arguments
from servers.results import (
    DocumentsResult,
    LineageResult,
    MetricsListing,
    MetricsResult,
    ProductDescription,
    QualityResult,
    QueryResult,
    SearchResult,
)
from servers.service import DataProductsService

__all__ = ["TOOLS", "product_resource"]

# Descriptions name the guardrails as {max_rows}, {max_sql_chars}...: the tool listing states the
# deployment's values (servers._tool_listing).
_PAGE = "rows per page, at most {max_rows}"


def _service(ctx: Context) -> DataProductsService:
    """The service the server's lifespan opened (or was given)."""
    return cast(DataProductsService, ctx.request_context.lifespan_context)


@refusing_invalid_arguments
def _query(arguments: Mapping[str, Any]) -> Query:
    """The query that ``query_product``'s arguments describe.

    Arguments named like a field of :class:`~catalog.query.Query` fill it; one left out (None) takes
    the query's default; the others (``product``, ``ctx``) are not the query's.
    """
    fields = Query.model_fields
    return Query.model_validate(
        {name: value for name, value in arguments.items() if name in fields and value is not None}
    )


async def search_products(
    query: Annotated[str, Field(description="keywords: subject, column, tag or owner", min_length=1)],
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=50, description="products to return")] = 10,
) -> SearchResult:
    """Find data products you may read, best match first."""
    return await _service(ctx).search_products(caller(ctx), query, limit=limit)


async def describe_product(
    product: Annotated[str, Field(description="product name, e.g. shop.orders")], ctx: Context
) -> ProductDescription:
    """A product's meaning: columns (type, unit, PII, masking), metrics, owner, freshness SLA."""
    return await _service(ctx).describe_product(caller(ctx), product)


async def query_product(
    product: Annotated[str, Field(description="product name, e.g. shop.orders")],
    ctx: Context,
    columns: Annotated[list[str] | None, Field(description="default: all")] = None,
    where: Annotated[
        list[Filter] | None,
        Field(description='conditions, ANDed; nest {"or":[...]} / {"and":[...]}'),
    ] = None,
    group_by: Annotated[list[str] | None, Field(description="columns to group by")] = None,
    aggregates: Annotated[
        list[Aggregate] | None, Field(description='e.g. [{"fn":"sum","column":"amount","as":"total"}]')
    ] = None,
    order_by: Annotated[list[OrderBy] | None, Field(description="sort keys")] = None,
    limit: Annotated[int | None, Field(ge=1, description=_PAGE)] = None,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
) -> QueryResult:
    """Read rows of one product, governed and bounded; aggregate with group_by + aggregates."""
    query = _query(locals())  # first: the arguments are checked before the caller is
    return await _service(ctx).query_product(caller(ctx), product, query)


async def run_sql(
    sql: Annotated[
        str,
        Field(description="one SELECT, at most {max_sql_chars} chars; tables are product names, e.g. FROM shop.orders"),
    ],
    ctx: Context,
) -> QueryResult:
    """Run one read-only SELECT over products (joins, CTEs, aggregates), governed; at most {max_rows} rows."""
    return await _service(ctx).run_sql(caller(ctx), sql)


async def search_documents(
    query: Annotated[str, Field(description="what to find", min_length=1)],
    ctx: Context,
    product: Annotated[str | None, Field(description="only this product")] = None,
    k: Annotated[int, Field(ge=1, le=50, description="rows to return")] = 10,
    chunks: Annotated[bool, Field(description="raw chunks, several per row")] = False,
) -> DocumentsResult:
    """Find passages in products' indexed text (keyword+semantic): each row's best chunk, cited."""
    return await _service(ctx).search_documents(caller(ctx), query, product=product, k=k, chunks=chunks)


async def get_lineage(
    product: Annotated[str, Field(description="product name, e.g. shop.orders")],
    ctx: Context,
    direction: Annotated[Literal["upstream", "downstream", "both"], Field(description="which way to follow")] = "both",
    depth: Annotated[int, Field(ge=1, le=10, description="hops to follow")] = 3,
) -> LineageResult:
    """Where a product's data comes from and goes: products, source tables, column links, PII carried."""
    return await _service(ctx).get_lineage(caller(ctx), product, direction=direction, depth=depth)


async def get_quality(
    product: Annotated[str, Field(description="product name, e.g. shop.orders")],
    ctx: Context,
    history: Annotated[int, Field(ge=1, le=200, description="recent check runs to return")] = 20,
) -> QualityResult:
    """A product's latest quality check results (since when), recent runs, freshness and owner."""
    return await _service(ctx).get_quality(caller(ctx), product, history=history)


@refusing_invalid_arguments
def _metrics_request(arguments: Mapping[str, Any]) -> MetricsRequest:
    """The request that ``query_metrics``' arguments describe (None takes the request's default)."""
    fields = MetricsRequest.model_fields
    return MetricsRequest.model_validate(
        {name: value for name, value in arguments.items() if name in fields and value is not None}
    )


async def list_metrics(
    ctx: Context,
    query: Annotated[str | None, Field(description="words in metric names or descriptions")] = None,
    product: Annotated[str | None, Field(description="only this product's metrics")] = None,
) -> MetricsListing:
    """Metrics you may query (unit, filter) and the dimensions and time grains they group by."""
    return await _service(ctx).list_metrics(caller(ctx), query=query, product=product)


async def query_metrics(
    metrics: Annotated[list[str], Field(description="product.metric names", min_length=1)],
    ctx: Context,
    product: Annotated[str | None, Field(description="for unqualified metric names")] = None,
    group_by: Annotated[list[GroupBy] | None, Field(description="grain for time dimensions")] = None,
    where: Annotated[list[DimensionCondition] | None, Field(description="ANDed; ops as query_product")] = None,
    time_range: Annotated[TimeRange | None, Field(description="start <= t < end")] = None,
    order_by: Annotated[list[MetricOrder] | None, Field(description="by metric or dimension name")] = None,
    limit: Annotated[int | None, Field(ge=1, description="rows, at most {max_rows}")] = None,
    explain: Annotated[bool, Field(description="return the SQL run")] = False,
) -> MetricsResult:
    """Compute metrics grouped by dimensions, governed, in one bounded read."""
    request = _metrics_request(locals())  # first: the arguments are checked before the caller is
    return await _service(ctx).query_metrics(caller(ctx), request, explain=explain)


#: Every tool, in the order a client lists them; each is named after its function.
TOOLS: tuple[Callable[..., Awaitable[object]], ...] = (
    search_products,
    describe_product,
    query_product,
    run_sql,
    search_documents,
    get_lineage,
    get_quality,
    list_metrics,
    query_metrics,
)


async def product_resource(name: str, ctx: Context) -> str:
    """The resource ``product://{name}``: the product as the caller may see it, as JSON."""
    return await _service(ctx).product_document(caller(ctx), name)
