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


# No class docstrings on the models agents send: pydantic would put them in the tool's input schema.


class GroupBy(StrictModel):
    dimension: str
    grain: TimeGrain | None = None


# ``dimension op value``, with the operators and value shapes of :class:`~catalog.query.Condition`.
class DimensionCondition(StrictModel):
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


# Half-open: start <= t < end, ISO dates or timestamps; ``dimension`` defaults to the time dimension grouped by.
class TimeRange(StrictModel):
    start: str | None = None
    end: str | None = None
    dimension: str | None = None

    @model_validator(mode="after")
    def _bounded(self) -> TimeRange:
        if self.start is None and self.end is None:
            raise ValueError("a time range needs a start, an end or both")
        return self


class MetricOrder(StrictModel):
    name: str
    direction: Literal["asc", "desc"] = "asc"


# One ``query_metrics`` call.
class MetricsRequest(StrictModel):
    metrics: list[str] = Field(min_length=1)
    product: str | None = None
    group_by: list[GroupBy] = Field(default_factory=list)
    where: list[DimensionCondition] = Field(default_factory=list)
    time_range: TimeRange | None = None
    order_by: list[MetricOrder] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
