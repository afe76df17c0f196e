"""Structured results of the use cases: the output schemas MCP clients see, and what the CLI prints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from catalog.contract import ProductContract
from catalog.policy import GovernedView
from embeddings.retrieval import RetrievedChunk

__all__ = [
    "ColumnInfo",
    "DocumentHit",
    "DocumentsResult",
    "ListedDimension",
    "ListedMetric",
    "MetricsListing",
    "MetricsResult",
    "ProductMetrics",
    "ResolvedDimensionInfo",
    "ResolvedMetricInfo",
    "TimeRangeInfo",
    "MetricInfo",
    "ProductDescription",
    "ProductSummary",
    "QueryResult",
    "SearchResult",
    "describe",
    "document_hit",
    "summarize",
]


# No class docstrings on these models: pydantic would put them in the output schemas MCP clients read.


# A product as search_products lists it; the registry's own listing is catalog.registry.RegistryEntry.
class ProductSummary(BaseModel):
    name: str
    title: str
    description: str
    version: str
    tags: list[str] = Field(default_factory=list)
    deprecated: bool = False


class SearchResult(BaseModel):
    products: list[ProductSummary]


class ColumnInfo(BaseModel):
    name: str
    type: str
    description: str
    unit: str | None = None
    pii: str | None = None
    masked: str | None = Field(default=None, description="mask method applied for you; filters see masked values")


class MetricInfo(BaseModel):
    name: str
    expr: str
    description: str
    unit: str | None = None
    filter: str | None = None


class ProductDescription(BaseModel):
    name: str
    version: str
    title: str
    description: str
    owner: str
    tags: list[str]
    primary_key: list[str]
    columns: list[ColumnInfo]
    metrics: list[MetricInfo]
    rows_filtered_for_you: bool = Field(description="true when a row policy limits the rows you can see")
    freshness_sla: str | None = None
    upstream: list[str] = Field(default_factory=list)
    deprecated: bool = False
    deprecation_note: str | None = None


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="more rows exist; pass next_cursor to continue")
    next_cursor: str | None = None
    masked_columns: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class DocumentHit(BaseModel):
    product: str
    key: dict[str, Any] = Field(description="primary key of the row the text comes from")
    field: str
    chunk: int
    text: str
    score: float
    citation: str = Field(description="product[key].field#chunk")


class DocumentsResult(BaseModel):
    hits: list[DocumentHit]


def summarize(contract: ProductContract, *, max_description: int = 240) -> ProductSummary:
    text = " ".join(contract.description.split())
    if len(text) > max_description:
        text = text[: max_description - 1].rstrip() + "…"
    return ProductSummary(
        name=contract.name,
        title=contract.title,
        description=text,
        version=contract.version,
        tags=list(contract.tags),
        deprecated=contract.deprecated,
    )


def document_hit(chunk: RetrievedChunk) -> DocumentHit:
    """A retrieved chunk as search_documents returns it: its reference, text, score and citation."""
    return DocumentHit.model_validate(chunk, from_attributes=True)


def describe(view: GovernedView) -> ProductDescription:
    """The product as this principal sees it: masked columns say so, the row filter text stays private."""
    contract = view.contract
    owner = contract.owner.team + (f" <{contract.owner.email}>" if contract.owner.email else "")
    return ProductDescription(
        name=contract.name,
        version=contract.version,
        title=contract.title,
        description=contract.description,
        owner=owner,
        tags=list(contract.tags),
        primary_key=list(contract.primary_key),
        columns=[
            ColumnInfo(
                name=c.name,
                type="string" if c.name in view.masked else c.type,
                description=c.description,
                unit=c.unit,
                pii=c.pii,
                masked=view.masked.get(c.name),
            )
            for c in contract.columns
        ],
        metrics=[
            MetricInfo(name=m.name, expr=m.expr, description=m.description, unit=m.unit, filter=m.filter)
            for m in contract.metrics
        ],
        rows_filtered_for_you=bool(view.row_filters),
        freshness_sla=contract.sla.freshness,
        upstream=list(contract.lineage.upstream),
        deprecated=contract.deprecated,
        deprecation_note=contract.deprecation_note,
    )


# -- the semantic layer: list_metrics and query_metrics ----------------------------------------------


class ListedDimension(BaseModel):
    name: str
    type: Literal["categorical", "time"]
    time_grains: list[str] = Field(default_factory=list)


class ListedMetric(BaseModel):
    name: str
    description: str
    unit: str | None = None
    filter: str | None = None
    derived: bool = False


class ProductMetrics(BaseModel):
    product: str
    metrics: list[ListedMetric]
    dimensions: list[ListedDimension] = Field(description="what the metrics group by, own and related")


class MetricsListing(BaseModel):
    products: list[ProductMetrics]


class ResolvedMetricInfo(BaseModel):
    name: str
    unit: str | None = None


class ResolvedDimensionInfo(BaseModel):
    name: str
    grain: str | None = None


class TimeRangeInfo(BaseModel):
    dimension: str
    start: str | None
    end: str | None


class MetricsResult(BaseModel):
    metrics: list[ResolvedMetricInfo]
    dimensions: list[ResolvedDimensionInfo]
    time_range: TimeRangeInfo | None = None
    columns: list[str]
    rows: list[list[Any]] = Field(description="time buckets: ISO start of the bucket")
    row_count: int
    truncated: bool
    sql: str | None = None
    masked_columns: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    # Filled per product read by the freshness checks; None until they run.
    freshness: dict[str, Any] | None = None
