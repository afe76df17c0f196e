"""What an agent may ask of the semantic layer: metrics, grouped by dimensions, over a time range.

JSON shape (what MCP clients send to ``query_metrics``)::

    {"metrics": ["shop.orders.order_count", "shop.orders.delivered_orders"],
     "group_by": [{"dimension": "order_time", "grain": "month"}, {"dimension": "shop.customers.country"}],
     "where": [{"dimension": "channel", "op": "in", "value": ["web", "mobile_app"]}],
     "time_range": {"start": "2024-01-01", "end": "2024-07-01"},
     "order_by": [{"name": "order_count", "direction": "desc"}],
     "limit": 20}

Metrics are ``<product>.<metric>`` or, with ``product``, just ``<metric>``. A dimension is one of the
metric's product (``region``) or of a product it relates to (``shop.customers.country``). The time
range is half-open: ``start <= t < end``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from catalog._model import StrictModel
from catalog.contract import TimeGrain
from catalog.query import Condition, Op, Scalar

__all__ = ["DimensionCondition", "GroupBy", "MetricOrder", "MetricsRequest", "TimeRange"]


class GroupBy(StrictModel):
    dimension: str = Field(description="a dimension, e.g. region or shop.customers.country")
    grain: TimeGrain | None = Field(default=None, description="time dimensions: hour, day, week, month, quarter, year")


class DimensionCondition(StrictModel):
    """``dimension op value``, with the operators and value shapes of :class:`~catalog.query.Condition`."""

    dimension: str
    op: Op
    value: Scalar | list[Scalar] = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> DimensionCondition:
        Condition(column=self.dimension, op=self.op, value=self.value)  # the same rules, the same messages
        return self

    def on_column(self, column: str) -> Condition:
        """This condition on the dimension's column."""
        return Condition(column=column, op=self.op, value=self.value)


class TimeRange(StrictModel):
    start: str | None = Field(default=None, description="ISO date or timestamp, inclusive")
    end: str | None = Field(default=None, description="ISO date or timestamp, exclusive")
    dimension: str | None = Field(default=None, description="the time dimension it bounds; default: the one grouped by")

    @model_validator(mode="after")
    def _bounded(self) -> TimeRange:
        if self.start is None and self.end is None:
            raise ValueError("a time range needs a start, an end or both")
        return self


class MetricOrder(StrictModel):
    name: str = Field(description="a requested metric or group-by dimension")
    direction: Literal["asc", "desc"] = "asc"


class MetricsRequest(StrictModel):
    """One ``query_metrics`` call."""

    metrics: list[str] = Field(min_length=1, description="product.metric, or metric names with product")
    product: str | None = Field(default=None, description="the product of unqualified metric names")
    group_by: list[GroupBy] = Field(default_factory=list)
    where: list[DimensionCondition] = Field(default_factory=list, description="conditions on dimensions, ANDed")
    time_range: TimeRange | None = None
    order_by: list[MetricOrder] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
