"""The MCP server: products as tools and resources, on stdio or streamable HTTP.

Tools (each a few lines over :class:`~servers.service.DataProductsService`): ``search_products``,
``describe_product``, ``query_product``, ``run_sql``; resource template ``product://{name}``. The
tool list is filtered by the configured allow-list. Errors come back as tool errors whose message
says what would work.

Every tool call and resource read leaves one audit row, refusals before the service included, and a
crash reads as one ``internal_error`` line: see :mod:`servers._audited_server`, the one boundary.

Who is calling: over HTTP, :mod:`servers.auth` maps the bearer token to a principal per request;
over stdio (and in-process) the principal is fixed when the server is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field, ValidationError

from catalog.principal import Principal
from catalog.query import Aggregate, Filter, OrderBy, Query
from servers._audited_server import AuditedMCPServer, Refused, argument_problems
from servers.results import DocumentsResult, ProductDescription, QueryResult, SearchResult
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["create_server"]

_READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = (
    "Governed data products. Find products with search_products, read one's columns, metrics and units "
    "with describe_product, then read rows with query_product (filters, group_by/aggregates, order, cursor "
    "paging) or run_sql (one SELECT over product names such as sales.orders); find passages of text with "
    "search_documents. Masked columns hold masked "
    "values; rows may be filtered for you."
)


def create_server(
    settings: Settings,
    *,
    principal: Principal | None = None,
    service: DataProductsService | None = None,
) -> MCPServer[DataProductsService]:
    """Build the MCP server.

    ``principal`` is the caller of every request that carries no authenticated principal (stdio and
    in-process use); leave it None for HTTP so unauthenticated requests are refused. ``service`` may be
    passed in (tests, benchmarks); otherwise it is opened in the server's lifespan and closed there.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[DataProductsService]) -> AsyncIterator[DataProductsService]:
        if service is not None:
            yield service
            return
        async with DataProductsService.open(settings) as owned:
            yield owned

    server = AuditedMCPServer(
        "dataproducts",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        version="0.1.0",
        log_level="WARNING",
        principal=principal,
    )
    allowed = set(settings.server.tools)
    caller = server.caller

    def svc(ctx: Context) -> DataProductsService:
        return cast(DataProductsService, ctx.request_context.lifespan_context)

    if "search_products" in allowed:

        @server.tool(annotations=_READ_ONLY)
        async def search_products(
            query: Annotated[str, Field(description="keywords: subject, column, tag or owner", min_length=1)],
            ctx: Context,
            limit: Annotated[int, Field(ge=1, le=50)] = 10,
        ) -> SearchResult:
            """Find data products you may read, best match first."""
            return await svc(ctx).search_products(caller(), query, limit=limit)

    if "describe_product" in allowed:

        @server.tool(annotations=_READ_ONLY)
        async def describe_product(
            product: Annotated[str, Field(description="product name, e.g. shop.orders")], ctx: Context
        ) -> ProductDescription:
            """A product's meaning: columns (type, unit, PII, masking), metrics, owner, freshness SLA."""
            return await svc(ctx).describe_product(caller(), product)

    if "query_product" in allowed:

        @server.tool(annotations=_READ_ONLY)
        async def query_product(
            product: Annotated[str, Field(description="product name, e.g. shop.orders")],
            ctx: Context,
            columns: Annotated[list[str] | None, Field(description="columns to return; default all")] = None,
            where: Annotated[
                list[Filter] | None,
                Field(description='ANDed conditions: {"column","op","value"} or {"or":[...]}/{"and":[...]}'),
            ] = None,
            group_by: list[str] | None = None,
            aggregates: Annotated[
                list[Aggregate] | None, Field(description='e.g. [{"fn":"sum","column":"amount","as":"total"}]')
            ] = None,
            order_by: list[OrderBy] | None = None,
            limit: Annotated[int | None, Field(ge=1)] = None,
            cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        ) -> QueryResult:
            """Read rows of one product, governed and bounded; aggregate with group_by + aggregates."""
            try:
                query = Query(
                    columns=columns,
                    where=where or [],
                    group_by=group_by or [],
                    aggregates=aggregates or [],
                    order_by=order_by or [],
                    limit=limit,
                    cursor=cursor,
                )
            except ValidationError as exc:
                raise Refused("invalid_arguments", argument_problems(exc)) from exc
            return await svc(ctx).query_product(caller(), product, query)

    if "run_sql" in allowed:

        @server.tool(annotations=_READ_ONLY)
        async def run_sql(
            sql: Annotated[str, Field(description="one SELECT; tables are product names, e.g. FROM shop.orders")],
            ctx: Context,
        ) -> QueryResult:
            """Run one read-only SELECT over products (joins, CTEs, aggregates), governed like query_product."""
            return await svc(ctx).run_sql(caller(), sql)

    if "search_documents" in allowed:

        @server.tool(annotations=_READ_ONLY)
        async def search_documents(
            query: Annotated[str, Field(description="what to find, in plain words", min_length=1)],
            ctx: Context,
            product: Annotated[str | None, Field(description="only this product, e.g. docs.handbook")] = None,
            k: Annotated[int, Field(ge=1, le=50)] = 10,
        ) -> DocumentsResult:
            """Find passages in products' indexed text (keyword + semantic); each hit cites its product and row."""
            return await svc(ctx).search_documents(caller(), query, product=product, k=k)

    @server.resource("product://{name}", mime_type="application/json", description="A product as you may see it")
    async def product_resource(name: str, ctx: Context) -> str:
        return await svc(ctx).product_document(caller(), name)

    return server
