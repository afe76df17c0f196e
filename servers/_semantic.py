"""What the semantic layer's use cases return, built from contracts and compiled requests.

:func:`product_metrics` lists a product's metrics with the dimensions they can be grouped by (its own
and those of the related products the caller may read); :func:`metrics_result` turns a run of a
:class:`~catalog.metrics.CompiledMetrics` into the answer that echoes what was resolved.
"""

from __future__ import annotations

from collections.abc import Mapping

from catalog._metric_rules import is_derived
from catalog.contract import ProductContract
from catalog.metric_query import MetricsRequest
from catalog.metrics import CompiledMetrics, available_dimensions
from catalog.policy import GovernedView
from catalog.query import RowSet
from catalog.values import json_value
from servers.results import (
    ListedDimension,
    ListedMetric,
    MetricsResult,
    ProductMetrics,
    ResolvedDimensionInfo,
    ResolvedMetricInfo,
    TimeRangeInfo,
)

__all__ = ["matches", "metrics_result", "product_metrics"]


def product_metrics(contract: ProductContract, related: Mapping[str, ProductContract]) -> ProductMetrics:
    """The product's metrics and every dimension they can be grouped by (``related``: readable related products)."""
    return ProductMetrics(
        product=contract.name,
        metrics=[
            ListedMetric(
                name=f"{contract.name}.{m.name}",
                description=m.description,
                unit=m.unit,
                filter=m.filter,
                derived=is_derived(m),
            )
            for m in contract.metrics
        ],
        dimensions=[
            ListedDimension(name=name, type=d.kind, time_grains=list(d.time_grains))
            for name, _, d in available_dimensions(contract, related)
        ],
    )


def matches(listing: ProductMetrics, text: str | None) -> ProductMetrics | None:
    """``listing`` narrowed to the metrics whose name, description or unit hold every word of ``text``
    (all of them when the product's name or title matches); None when nothing matches."""
    if not text:
        return listing
    words = text.lower().split()
    if all(w in listing.product.lower() for w in words):
        return listing
    kept = [
        m for m in listing.metrics if all(w in " ".join([m.name, m.description, m.unit or ""]).lower() for w in words)
    ]
    return listing.model_copy(update={"metrics": kept}) if kept else None


def metrics_result(
    compiled: CompiledMetrics, rowset: RowSet, request: MetricsRequest, views: Mapping[str, GovernedView]
) -> MetricsResult:
    """The answer: resolved metrics and dimensions, the time range, the rows (buckets as ISO text)."""
    time_range = None
    if request.time_range is not None and compiled.time_dimension is not None:
        time_range = TimeRangeInfo(
            dimension=compiled.time_dimension.name, start=request.time_range.start, end=request.time_range.end
        )
    rows = [[json_value(v) for v in row] for row in compiled.rows(rowset)]
    masked = [d.name for d in compiled.dimensions if d.dimension.column in views[d.product].masked]
    warnings = []
    if compiled.min_group_size is not None:
        read = ", ".join(compiled.aggregate_only_read)
        warnings.append(
            f"groups under {compiled.min_group_size} rows are suppressed ({read} is aggregate-only for you)"
        )
    return MetricsResult(
        metrics=[ResolvedMetricInfo(name=m.name, unit=m.metric.unit) for m in compiled.metrics],
        dimensions=[ResolvedDimensionInfo(name=d.name, grain=d.grain) for d in compiled.dimensions],
        time_range=time_range,
        columns=compiled.columns,
        rows=rows,
        row_count=len(rows),
        truncated=rowset.truncated or len(rowset.rows) > compiled.limits.max_rows,
        masked_columns=masked,
        warnings=warnings,
    )
