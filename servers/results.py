"""Structured results of the use cases: the output schemas MCP clients see, and what the CLI prints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from catalog.contract import ProductContract
from catalog.freshness import Freshness
from catalog.lineage import LineageGraph
from catalog.policy import GovernedView
from catalog.quality_log import CheckResult
from catalog.query import RowSet
from catalog.values import json_value
from embeddings.retrieval import RetrievedChunk

__all__ = [
    "query_result",
    "CheckInfo",
    "ColumnInfo",
    "FreshnessInfo",
    "QualityResult",
    "DocumentHit",
    "DocumentsResult",
    "LineageEdgeInfo",
    "LineageNodeInfo",
    "LineageResult",
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
    "as_json",
    "check_info",
    "describe",
    "freshness_info",
    "document_hit",
    "lineage_result",
    "owner_text",
    "summarize",
]


# Freshness blocks and check results travel as plain objects (built from FreshnessInfo / CheckInfo):
# their keys are named once here, which keeps every read tool's output schema small.
#: Results of reads say which store answered: ``{name: source|replica, as_of, fallback_reason}``;
#: ``search_documents`` names the search store (``embedded``|``elasticsearch``), see :mod:`servers.search_index`.
STORE_DOC = "name (source|replica), as_of, fallback_reason (why the source answered for a replica)"
FRESHNESS_DOC = "per product: product, state (fresh|stale|unknown), as_of, age, sla, reason"
CHECKS_DOC = "per check: name, kind, status (pass|warn|fail|error), observed, threshold, since"


def _listed(description: str) -> Any:
    """A list field of plain objects, empty by default: existing results only gain a key."""
    return Field(default_factory=list, description=description)


def _text(description: str | None = None) -> Any:
    """A text field, empty by default."""
    return Field(default="", description=description)


# No class docstrings on these models: pydantic would put them in the output schemas MCP clients read.


def _untitled(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic derives from field names (``"title": "Row Count"``): they repeat the
    names in every tool's output schema, which agents read in every tool listing."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


class ResultModel(BaseModel):
    # the base of every tool result: output schemas without derived titles
    model_config = ConfigDict(json_schema_extra=_untitled)


# A product as search_products lists it; the registry's own listing is catalog.registry.RegistryEntry.
class ProductSummary(ResultModel):
    name: str
    title: str
    description: str
    version: str
    tags: list[str] = Field(default_factory=list)
    deprecated: bool = False
    owner: str = _text()
    freshness: str = _text("fresh|stale|unknown")
    quality: str = _text("checks passing|failing since when, or unchecked")


class SearchResult(ResultModel):
    products: list[ProductSummary]


class ColumnInfo(ResultModel):
    name: str
    type: str
    description: str
    unit: str | None = None
    pii: str | None = None
    masked: str | None = Field(default=None, description="your mask; filters see masked values")
    aggregate_only: int | None = Field(default=None, description="aggregates only, groups of at least this many rows")


class MetricInfo(ResultModel):
    name: str
    expr: str
    description: str
    unit: str | None = None
    filter: str | None = None


class ProductDescription(ResultModel):
    name: str
    version: str
    title: str
    description: str
    owner: str
    tags: list[str]
    primary_key: list[str]
    columns: list[ColumnInfo]
    metrics: list[MetricInfo]
    rows_filtered_for_you: bool = Field(description="a row policy limits what you see")
    freshness_sla: str | None = None
    upstream: list[str] = Field(default_factory=list)
    deprecated: bool = False
    deprecation_note: str | None = None
    freshness: list[dict[str, Any]] = _listed(FRESHNESS_DOC)
    quality: list[dict[str, Any]] = _listed(CHECKS_DOC)
    warnings: list[str] = Field(default_factory=list)


class QueryResult(ResultModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="more rows: pass next_cursor")
    next_cursor: str | None = None
    masked_columns: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    freshness: list[dict[str, Any]] = _listed(FRESHNESS_DOC)
    store: Any = None  # STORE_DOC (untyped: every token of the output schema is paid per agent turn)


class DocumentHit(ResultModel):
    product: str
    key: dict[str, Any] = Field(description="its row's primary key")
    field: str
    chunk: int
    text: str
    score: float
    citation: str = Field(description="product[key].field#chunk")
    matched: int = Field(default=1, description="its chunks that matched")


class DocumentsResult(ResultModel):
    hits: list[DocumentHit]
    warnings: list[str] = Field(default_factory=list)
    freshness: list[dict[str, Any]] = _listed(FRESHNESS_DOC)
    store: Any = None  # STORE_DOC: the search index's kind and as_of (untyped, as on QueryResult)


class FreshnessInfo(ResultModel):
    product: str
    as_of: AwareDatetime | None = Field(default=None, description="latest data time (UTC)")
    age_s: float | None = None
    age: str | None = None
    sla: str | None = Field(default=None, description="promised maximum age")
    state: Literal["fresh", "stale", "unknown"]
    reason: str | None = Field(default=None, description="why the state is unknown")


class CheckInfo(ResultModel):
    name: str
    kind: str
    severity: str
    status: Literal["pass", "warn", "fail", "error"]
    observed: str | None = None
    threshold: str
    message: str
    rows_scanned: int | None = None
    checked_at: AwareDatetime
    since: AwareDatetime | None = Field(default=None, description="when this status began")


class QualityResult(ResultModel):
    product: str
    version: str
    owner: str
    freshness: dict[str, Any]
    checks: list[dict[str, Any]] = _listed(CHECKS_DOC)
    history: list[dict[str, Any]] = _listed("recent runs, newest first")


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
    owner = owner_text(contract)
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
                aggregate_only=view.aggregate_only.get(c.name),
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


class LineageNodeInfo(ResultModel):
    id: str = Field(description="product name, or connection:table")
    kind: Literal["product", "table"]
    pii: dict[str, list[str]] = Field(default_factory=dict, description="column: PII kinds, carried ones included")
    untagged_pii: dict[str, list[str]] = Field(default_factory=dict)


class LineageEdgeInfo(ResultModel):
    source: str
    target: str
    declared: bool
    derived: bool
    columns: dict[str, list[str]] | None = Field(description="target column: source columns; null if unknown")
    reads: list[str] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=list)
    note: str | None = None


class LineageResult(ResultModel):
    nodes: list[LineageNodeInfo]
    edges: list[LineageEdgeInfo]


def lineage_result(graph: LineageGraph) -> LineageResult:
    """A lineage graph as get_lineage returns it: node ids, PII per column, column links per edge."""
    nodes = [LineageNodeInfo(id=n.id, kind=n.kind, pii=n.pii, untagged_pii=n.carried_pii) for n in graph.nodes.values()]
    edges = []
    for e in graph.edges:
        columns: dict[str, list[str]] | None = None
        if e.columns is not None:
            columns = {}
            for link in e.columns:
                columns.setdefault(link.target, []).append(link.source)
        edges.append(
            LineageEdgeInfo(
                source=e.source,
                target=e.target,
                declared=e.declared,
                derived=e.derived,
                columns=columns,
                reads=e.reads,
                pii=e.pii,
                note=e.note,
            )
        )
    return LineageResult(nodes=nodes, edges=edges)


def owner_text(contract: ProductContract) -> str:
    """``team <email>``: whom to ask about a product."""
    return contract.owner.team + (f" <{contract.owner.email}>" if contract.owner.email else "")


def freshness_info(freshness: Freshness) -> FreshnessInfo:
    """A product's freshness as read results carry it."""
    return FreshnessInfo(
        product=freshness.product,
        as_of=freshness.as_of,
        age_s=None if freshness.age_s is None else round(freshness.age_s, 1),
        age=freshness.age,
        sla=freshness.sla,
        state=freshness.state,
        reason=freshness.reason,
    )


def check_info(result: CheckResult) -> CheckInfo:
    """One check result as the catalog shows it."""
    return CheckInfo(name=result.check_name, **result.model_dump(include=set(CheckInfo.model_fields) - {"name"}))


def as_json(model: BaseModel) -> dict[str, Any]:
    """``model`` as the plain object a result carries (unset fields left out)."""
    return model.model_dump(mode="json", exclude_none=True)


# -- the semantic layer: list_metrics and query_metrics ----------------------------------------------


class ListedDimension(ResultModel):
    name: str
    type: Literal["categorical", "time"]
    time_grains: list[str] = Field(default_factory=list)


class ListedMetric(ResultModel):
    name: str
    description: str
    unit: str | None = None
    filter: str | None = None
    derived: bool = False


class ProductMetrics(ResultModel):
    product: str
    metrics: list[ListedMetric]
    dimensions: list[ListedDimension] = Field(description="what the metrics group by, own and related")


class MetricsListing(ResultModel):
    products: list[ProductMetrics]


class ResolvedMetricInfo(ResultModel):
    name: str
    unit: str | None = None


class ResolvedDimensionInfo(ResultModel):
    name: str
    grain: str | None = None


class TimeRangeInfo(ResultModel):
    dimension: str
    start: str | None
    end: str | None


class MetricsResult(ResultModel):
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
    freshness: list[dict[str, Any]] = _listed(FRESHNESS_DOC)
    store: Any = None  # STORE_DOC (untyped: every token of the output schema is paid per agent turn)


def deprecation_warning(view: GovernedView, result: QueryResult | MetricsResult) -> None:
    """Warn on ``result`` when ``view``'s product is deprecated (with its note)."""
    if view.contract.deprecated:
        note = f": {view.contract.deprecation_note}" if view.contract.deprecation_note else ""
        result.warnings.append(f"{view.contract.name} is deprecated{note}")


def query_result(rowset: RowSet, views: list[GovernedView]) -> QueryResult:
    """The rows of ``rowset`` as a tool result; ``masked_columns`` names those masked for the principal."""
    masked = sorted({c for v in views for c in v.masked if c in rowset.columns})
    return QueryResult(
        columns=rowset.columns,
        rows=[[json_value(v) for v in row] for row in rowset.rows],
        row_count=len(rowset.rows),
        truncated=rowset.truncated,
        masked_columns=masked,
    )
