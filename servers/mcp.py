"""The MCP server: products as tools and resources, on stdio or streamable HTTP.

:func:`create_server` opens the service in the server's lifespan, builds the server and registers
the tools of :mod:`servers.tools` that the configured allow-list names (``search_products``,
``describe_product``, ``query_product``, ``run_sql``, ``search_documents``, ``get_quality``,
``get_lineage``; all
read-only) and the resource template ``product://{name}``. When the lifespan opens the service
(stdio), it also runs the quality checks on the schedule ``checks.every`` sets (HTTP does the same in
:mod:`servers.http`). Errors come back as tool errors whose message says what would
work.

Every tool call and resource read leaves one audit row, refusals before the service included, and a
crash reads as one ``internal_error`` line: see :mod:`servers._audited_server`, the one boundary.

Who is calling: over HTTP, :mod:`servers.auth` maps the bearer token to a principal per request;
over stdio (and in-process) the principal is fixed when the server is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from opentelemetry.trace import TracerProvider

from catalog.principal import Principal
from servers._audited_server import AuditedMCPServer
from servers.service import DataProductsService
from servers.settings import Settings
from servers.telemetry import tracer_for
from servers.tools import TOOLS, product_resource

__all__ = ["create_server"]

_PRODUCT_TEXT = "A product as you may see it"
_READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = (
    "Governed data products. Find products with search_products, read one's columns, metrics and units "
    "with describe_product, then read rows with query_product (filters, group_by/aggregates, order, cursor "
    "paging) or run_sql (one SELECT over product names such as sales.orders); find passages of text with "
    "search_documents; see where a product's data comes from and goes with get_lineage. Masked columns "
    "hold masked values; rows may be filtered for you. Rows come as text in three parts, one per line: a JSON "
    "object (row_count, truncated, next_cursor, ...), the column names, then one comma-separated line per row "
    '(an empty cell is null; a "quoted" cell is a JSON string).'
)


def create_server(
    settings: Settings,
    *,
    principal: Principal | None = None,
    service: DataProductsService | None = None,
    tracer_provider: TracerProvider | None = None,
) -> MCPServer[DataProductsService]:
    """Build the MCP server.

    ``principal`` is the caller of every request that carries no authenticated principal (stdio and
    in-process use); leave it None for HTTP so unauthenticated requests are refused. ``service`` may be
    passed in (tests, benchmarks); otherwise it is opened in the server's lifespan and closed there.
    ``tracer_provider`` receives the calls' spans; by default ``settings.telemetry`` decides (see
    :mod:`servers.telemetry`).

    Raises:
        ConfigError: OTLP export is configured but the OpenTelemetry SDK is not installed.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[DataProductsService]) -> AsyncIterator[DataProductsService]:
        if service is not None:
            yield service
            return
        async with DataProductsService.open(settings) as owned, owned.checks_on_schedule():
            yield owned

    server = AuditedMCPServer(
        "dataproducts",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        version="0.1.0",
        log_level="WARNING",
        principal=principal,
        limits=settings.limits,
        tracer=tracer_for(settings.telemetry, tracer_provider),
    )
    allowed = set(settings.server.tools)
    for tool in TOOLS:
        if tool.__name__ in allowed:
            server.add_tool(tool, annotations=_READ_ONLY)
    as_resource = server.resource("product://{name}", mime_type="application/json", description=_PRODUCT_TEXT)
    as_resource(product_resource)
    return server
