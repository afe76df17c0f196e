"""Check a contract against its live source: do the declared columns exist, with compatible types?

The catalog layer does not import connectors: anything with an async ``introspect(table)`` returning
a table schema (columns with ``name``/``native_type``/``type``, ``primary_key``, ``row_count``) will
do — :class:`connectors.base.Connector` and its :class:`~connectors.base.TableSchema` fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from catalog.contract import ColumnType, ProductContract
from catalog.errors import ContractProblem, NotFoundError
from catalog.suggest import close_matches

__all__ = ["Introspector", "SourceColumn", "SourceSchema", "compatible_types", "validate_against_source"]


class SourceColumn(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def native_type(self) -> str: ...
    @property
    def type(self) -> ColumnType: ...
    @property
    def nullable(self) -> bool: ...
    @property
    def inferred(self) -> str | None: ...


class SourceSchema(Protocol):
    @property
    def table(self) -> str: ...
    @property
    def columns(self) -> Sequence[SourceColumn]: ...
    @property
    def primary_key(self) -> Sequence[str]: ...
    @property
    def row_count(self) -> int | None: ...


class Introspector(Protocol):
    async def introspect(self, table: str) -> SourceSchema: ...


# Declared type → source types whose values it can faithfully present. Temporal and JSON columns are
# often stored as text (SQLite, CSV); integers stand in for booleans where the store has none.
_COMPATIBLE: dict[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "integer": frozenset({"integer"}),
    "float": frozenset({"float", "decimal", "integer"}),
    "decimal": frozenset({"decimal", "integer"}),
    "boolean": frozenset({"boolean", "integer"}),
    "date": frozenset({"date", "timestamp", "string"}),
    "timestamp": frozenset({"timestamp", "string"}),
    "time": frozenset({"time", "string"}),
    "json": frozenset({"json", "string"}),
    "bytes": frozenset({"bytes"}),
}


def compatible_types(declared: str) -> frozenset[str]:
    """The source column types a column declared as ``declared`` may sit on."""
    return _COMPATIBLE.get(declared, frozenset({declared}))


async def validate_against_source(contract: ProductContract, connector: Introspector) -> list[ContractProblem]:
    """Every mismatch between the contract and its live source table (empty when they agree).

    Reports declared columns the table lacks (hint: the closest real column, then all of them),
    declared types the native type cannot hold, primary key columns the table lacks, and a missing
    table (hint: the tables that exist). Query sources are not checked (empty list).

    Raises:
        ConnectorUnavailableError: the store cannot be reached.
    """
    table = contract.source.table
    if table is None:
        return []
    try:
        schema = await connector.introspect(table)
    except NotFoundError as exc:
        return [ContractProblem(message=f"source table {table!r} not found", path="source.table", hint=exc.message)]

    by_name = {c.name: c for c in schema.columns}
    real = [c.name for c in schema.columns]
    problems: list[ContractProblem] = []
    for index, column in enumerate(contract.columns):
        source_column = by_name.get(column.name)
        if source_column is None:
            problems.append(
                ContractProblem(
                    message=f"column {column.name!r} is not in source table {table!r}",
                    path=f"columns[{index}].name",
                    hint=_closest(column.name, real),
                )
            )
        elif source_column.type not in compatible_types(column.type):
            problems.append(
                ContractProblem(
                    message=(
                        f"column {column.name!r} is declared {column.type} but the source column is "
                        f"{source_column.native_type} ({source_column.type})"
                    ),
                    path=f"columns[{index}].type",
                    hint=f"declare type: {source_column.type}, or cast in a source query",
                )
            )
    problems += [
        ContractProblem(
            message=f"primary key column {key!r} is not in source table {table!r}",
            path="primary_key",
            hint=_closest(key, real),
        )
        for key in contract.primary_key
        if key not in by_name
    ]
    return problems


def _closest(name: str, real: list[str]) -> str:
    match = close_matches(name, real, cutoff=0.5, ignore_case=True)
    listing = f"source columns: {', '.join(real)}"
    return f"did you mean {match[0]!r}? {listing}" if match else listing
