"""What the catalog page shows, gathered through the service's use cases as the viewer.

Every section of a product page is one use case of :class:`~servers.service.DataProductsService`, called
as the viewing principal, so governance and auditing are exactly those of the MCP tools:
``describe_product`` (columns with the viewer's masks, metrics, owner), ``get_quality`` (checks,
history, freshness), ``list_metrics`` (metrics and dimensions), ``get_lineage`` (the graph, readable
products only) and ``query_product`` (the governed sample: row filters and masks apply). Each leaves its
own audit row; the page view itself is audited around them (:mod:`servers.catalog_page.routes`).

A section that fails on its own (a store down, a stale product that refuses reads) shows its error in
place; the page fails as a whole only when the product cannot be described to the viewer (unknown,
access denied).

Version history comes from the registry once ``describe_product`` has granted access; its diffs never
show row filter conditions (describe keeps them private too) nor the names of products the viewer may
not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import anyio.to_thread

from catalog.errors import DataProductsError
from catalog.principal import Principal
from catalog.query import Query
from catalog.registry import Registry
from catalog.versioning import diff_contracts
from servers.catalog_page.lineage_svg import LineageLayout, layout_lineage
from servers.results import (
    ProductDescription,
    ProductMetrics,
    ProductSummary,
    QualityResult,
    QueryResult,
    owner_text,
    summarize,
)
from servers.service import DataProductsService

__all__ = ["ProductPage", "VersionEntry", "list_products", "product_page"]

#: The most products a search lists.
SEARCH_LIMIT = 50
_ROW_FILTER_CHANGE = re.compile(r"^(policy: row filter (?:added|removed) for \S+): .*$", re.DOTALL)


@dataclass
class VersionEntry:
    """One registered version, newest first, with what changed from the one before."""

    version: str
    at: datetime | None
    actor: str | None
    changes: list[str] = field(default_factory=list)
    breaking: bool = False
    deprecated_note: str | None = None


@dataclass
class ProductPage:
    """Everything a product page shows; ``errors`` maps a section to why it could not be shown."""

    product: ProductDescription
    quality: QualityResult | None = None
    metrics: ProductMetrics | None = None
    lineage: LineageLayout | None = None
    sample: QueryResult | None = None
    sample_columns_left_out: list[str] = field(default_factory=list)
    history: list[VersionEntry] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


async def list_products(service: DataProductsService, principal: Principal, text: str) -> list[ProductSummary]:
    """The products the principal may read: those matching ``text`` best first (``search_products``),
    or all of them by name when ``text`` is empty."""
    if text:
        return (await service.search_products(principal, text, limit=SEARCH_LIMIT)).products
    listed = []
    for contract in sorted(await service.readable_products(principal), key=lambda c: c.name):
        summary = summarize(contract)
        summary.owner = owner_text(contract)
        listed.append(summary)
    return listed


async def product_page(
    service: DataProductsService, principal: Principal, name: str, *, sample_rows: int
) -> ProductPage:
    """The page of product ``name`` as ``principal`` may see it.

    Raises:
        NotFoundError, AccessDeniedError, StaleDataError: from ``describe_product``.
    """
    page = ProductPage(product=await service.describe_product(principal, name))
    try:
        page.quality = await service.get_quality(principal, name, history=10)
    except DataProductsError as exc:
        page.errors["quality"] = _problem(exc)
    try:
        listing = await service.list_metrics(principal, product=name)
        page.metrics = next((p for p in listing.products if p.product == name), None)
    except DataProductsError as exc:
        page.errors["metrics"] = _problem(exc)
    try:
        lineage = await service.get_lineage(principal, name, direction="both", depth=3)
        page.lineage = layout_lineage(lineage, name)
    except DataProductsError as exc:
        page.errors["lineage"] = _problem(exc)
    readable = await service.readable_products(principal)
    page.history = await anyio.to_thread.run_sync(
        lambda: version_history(service.registry, name, {c.name for c in readable})
    )
    await _sample(service, principal, page, sample_rows)
    return page


async def _sample(service: DataProductsService, principal: Principal, page: ProductPage, rows: int) -> None:
    """A few rows read with ``query_product`` as the viewer; aggregate-only columns are left out."""
    columns = [c.name for c in page.product.columns if c.aggregate_only is None]
    page.sample_columns_left_out = [c.name for c in page.product.columns if c.aggregate_only is not None]
    if not columns:
        page.errors["sample"] = "every column is aggregate-only for you: no raw rows to show"
        return
    limit = min(rows, service.settings.limits.max_rows)
    try:
        page.sample = await service.query_product(principal, page.product.name, Query(columns=columns, limit=limit))
    except DataProductsError as exc:
        page.errors["sample"] = _problem(exc)


def version_history(registry: Registry, name: str, readable: set[str]) -> list[VersionEntry]:
    """Every registered version of ``name``, newest first, each with its changes from the previous one.

    Row filter conditions are not shown (only whom a filter applies to), nor is a change that names a
    registered product outside ``readable`` (only what changed: ``lineage.downstream changed``).
    """
    hidden = {entry.name for entry in registry.list_entries()} - readable
    versions = registry.versions(name)
    events = registry.history(name)
    registered = {e.version: e for e in events if e.event == "registered"}
    deprecated = {e.version: e.summary for e in events if e.event == "deprecated"}
    entries = []
    previous = None
    for version in versions:
        contract = registry.get(name, version)
        event = registered.get(version)
        entry = VersionEntry(version=version, at=event.at if event else None, actor=event.actor if event else None)
        if previous is not None:
            diff = diff_contracts(previous, contract)
            entry.breaking = diff.breaking
            entry.changes = [_shown_change(line, hidden) for line in diff.changes()]
        else:
            entry.changes = ["first registered version"]
        entry.deprecated_note = deprecated.get(version)
        entries.append(entry)
        previous = contract
    return entries[::-1]


def _shown_change(line: str, hidden: set[str]) -> str:
    """A diff line as a reader may see it: no row filter condition, no product in ``hidden``."""
    if match := _ROW_FILTER_CHANGE.match(line):
        return match.group(1) + " (its condition is not shown)"
    if any(re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", line) for name in hidden):
        return line.split(":", 1)[0] + " changed (it names a product you may not read)"
    return line


def _problem(exc: DataProductsError) -> str:
    return f"{exc.code}: {exc.message}"
