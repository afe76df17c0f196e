"""The connector contract: one small interface every store implements.

A connector fronts one named store. It introspects tables (for ``validate`` and ``init``) and runs
one already-governed SELECT statement (a sqlglot expression built by :mod:`catalog.compile`)
read-only, under :class:`~catalog.query.Limits`, enforced by the driver itself:

* the statement is rendered in the connector's ``dialect``;
* at most ``limits.max_rows`` rows and ``limits.max_bytes`` bytes come back (``truncated`` says so);
* the statement is cancelled after ``limits.timeout_s`` (:class:`~catalog.errors.QueryTimeoutError`);
* writes are impossible at the driver/transaction level, not by string checks.

Sync drivers run in a worker thread through ``anyio.to_thread``. Callers plan on
:class:`Capabilities` flags, never on ``isinstance``.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlglot import exp

from catalog.contract import ColumnType
from catalog.query import Limits, RowSet

__all__ = [
    "Capabilities",
    "ConnectionConfig",
    "Connector",
    "IntrospectedColumn",
    "TableSchema",
    "estimate_row_bytes",
]


class ConnectionConfig(BaseModel):
    """A named store, as declared under ``connections:`` in dataproducts.yaml.

    ``kind`` picks the connector (entry-point group ``dataproducts.connectors``): ``sqlite``,
    ``postgresql``, ``duckdb``. SQLAlchemy kinds take ``url``; DuckDB takes ``path`` (a database
    file) and/or ``files`` (view name → Parquet/CSV path or glob).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: str
    url: SecretStr | None = None
    path: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    supports_schemas: bool = False
    supports_files: bool = False
    supports_tuple_comparison: bool = True
    supports_md5: bool = True


class IntrospectedColumn(BaseModel):
    name: str
    native_type: str
    type: ColumnType
    nullable: bool = True


class TableSchema(BaseModel):
    table: str
    columns: list[IntrospectedColumn]
    primary_key: list[str] = Field(default_factory=list)
    row_count: int | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def estimate_row_bytes(row: tuple[Any, ...]) -> int:
    """A cheap, stable estimate of a row's size once serialised (used for the byte cap)."""
    size = 2
    for value in row:
        if value is None:
            size += 4
        elif isinstance(value, str | bytes):
            size += len(value) + 3
        else:
            size += len(str(value)) + 1
    return size


class Connector(abc.ABC):
    """Base class of every store connector.

    Subclasses set ``kind`` and ``dialect`` (a sqlglot dialect name) and implement
    :meth:`introspect`, :meth:`list_assets` and :meth:`_execute` (sync, run in a worker thread).
    ``kind``, ``dialect`` and ``capabilities`` are usually class attributes; a class serving several
    kinds (SQLAlchemy: ``sqlite`` and ``postgresql``) sets them per instance in ``__init__``.
    """

    kind: str
    dialect: str
    capabilities: Capabilities = Capabilities()

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def render(self, statement: exp.Expr | str) -> str:
        """The statement as SQL text in this store's dialect (text is taken as already rendered for it)."""
        return statement if isinstance(statement, str) else statement.sql(dialect=self.dialect)

    @abc.abstractmethod
    async def introspect(self, table: str) -> TableSchema:
        """Columns, primary key and row count of one table or view.

        Raises:
            NotFoundError: no such table; the message lists the tables that exist.
            ConnectorUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    async def list_assets(self) -> list[str]:
        """Names of the tables and views this connection can read (``schema.table`` where schemas apply)."""

    @abc.abstractmethod
    async def execute(self, statement: exp.Query | str, limits: Limits) -> RowSet:
        """Run one governed SELECT (an AST, or text already rendered by :meth:`render`) read-only under ``limits``.

        Raises:
            QueryTimeoutError: the statement ran longer than ``limits.timeout_s``.
            QueryExecutionError: the store rejected the statement (``.orig`` keeps the driver error).
            ConnectorUnavailableError: the store cannot be reached.
        """

    async def health(self) -> bool:
        """True when the store answers a trivial query."""
        try:
            await self.execute(exp.select(exp.Literal.number(1)), Limits(max_rows=1, timeout_s=5))
        except Exception:
            return False
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release pooled connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
