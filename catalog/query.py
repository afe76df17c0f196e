"""The neutral query model: what an agent may ask of one product, independent of any store.

A :class:`Query` names product columns only. Governance (:mod:`catalog.policy`) and compilation
(:mod:`catalog.compile`) turn it into one SQL statement on the physical source; connectors run it
under :class:`Limits`.

JSON shape (what MCP clients send)::

    {"columns": ["order_id", "amount"],
     "where": [{"column": "amount", "op": ">", "value": 10},
               {"or": [{"column": "region", "op": "=", "value": "EU"},
                       {"column": "region", "op": "is_null"}]}],
     "order_by": [{"column": "amount", "direction": "desc"}],
     "limit": 50}

or, aggregated::

    {"group_by": ["region"], "aggregates": [{"fn": "sum", "column": "amount", "as": "total"}]}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from typing_extensions import TypeAliasType

from catalog._model import StrictModel

__all__ = [
    "AggFn",
    "Aggregate",
    "AllOf",
    "AnyOf",
    "Condition",
    "Filter",
    "Limits",
    "Op",
    "OrderBy",
    "Query",
    "RowSet",
]

Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not_in", "like", "is_null", "is_not_null", "between"]
AggFn = Literal["count", "count_distinct", "sum", "avg", "min", "max"]
Scalar = str | int | float | bool | None


class Condition(StrictModel):
    """``in``/``not_in`` take a list, ``between`` [low, high], null tests no value."""

    column: str
    op: Op
    value: Scalar | list[Scalar] = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"op {self.op!r} needs a non-empty list value, e.g. [1, 2, 3]")
        elif self.op == "between":
            if not isinstance(self.value, list) or len(self.value) != 2:
                raise ValueError("op 'between' needs a [low, high] list value")
        elif self.op in ("is_null", "is_not_null"):
            if self.value is not None:
                raise ValueError(f"op {self.op!r} takes no value")
        elif isinstance(self.value, list) or self.value is None:
            raise ValueError(f"op {self.op!r} needs one scalar value (use is_null for null tests)")
        return self


class AllOf(StrictModel):
    all_of: list[Filter] = Field(alias="and", min_length=1)


class AnyOf(StrictModel):
    any_of: list[Filter] = Field(alias="or", min_length=1)


# A named alias: schemas define it once (``$defs/Filter``) and refer to it wherever a filter goes.
Filter = TypeAliasType("Filter", Annotated[Condition | AllOf | AnyOf, Field(union_mode="left_to_right")])


class OrderBy(StrictModel):
    column: str = Field(description="column or aggregate alias")
    direction: Literal["asc", "desc"] = "asc"


class Aggregate(StrictModel):
    fn: AggFn
    column: str | None = Field(default=None, description="omit only for count(*)")
    alias: str | None = Field(default=None, alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _column_needed(self) -> Aggregate:
        if self.column is None and self.fn != "count":
            raise ValueError(f"aggregate {self.fn!r} needs a column; only count may omit it")
        return self

    @property
    def output_name(self) -> str:
        if self.alias:
            return self.alias
        return f"{self.fn}_{self.column}" if self.column else "count"


class Query(StrictModel):
    """A read of one product. Without ``columns`` all visible columns are returned."""

    columns: list[str] | None = None
    where: list[Filter] = Field(default_factory=list, description="conditions, ANDed")
    group_by: list[str] = Field(default_factory=list)
    aggregates: list[Aggregate] = Field(default_factory=list)
    order_by: list[OrderBy] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = Field(default=None, description="next_cursor from the previous page")

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregates or self.group_by)

    @model_validator(mode="after")
    def _shape(self) -> Query:
        if self.group_by and not self.aggregates and self.columns:
            raise ValueError("with group_by, list output columns in group_by and aggregates, not columns")
        if self.aggregates and self.columns:
            raise ValueError("an aggregate query returns group_by columns and aggregates; drop 'columns'")
        return self


class Limits(StrictModel):
    """Guardrails applied to every statement a connector runs."""

    max_rows: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=4_000_000, ge=1024)
    timeout_s: float = Field(default=30.0, gt=0)
    max_sql_chars: int = Field(default=10_000, ge=100, description="longest run_sql text accepted")
    max_sql_depth: int = Field(default=32, ge=4, description="deepest nesting of run_sql text accepted")
    max_hits: int = Field(default=1000, ge=1, description="most hits search_documents and ask return (k)")


class RowSet(BaseModel):
    """What a connector returns: rows within the limits, whether more existed, and (for governed
    statements) the physical objects the statement read."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    truncated_by: Literal["rows", "bytes"] | None = None
    bytes: int = 0
    objects: list[str] = Field(default_factory=list)
