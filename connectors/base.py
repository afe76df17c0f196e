"""The connector contract: one small interface every store implements.

A connector fronts one named store. It introspects tables (for ``validate`` and ``init``) and runs
one already-governed SELECT statement (a sqlglot expression built by :mod:`catalog.compile`)
read-only, under :class:`~catalog.query.Limits`, enforced by the driver itself:

* the statement is rendered in the connector's ``dialect``;
* at most ``limits.max_rows`` rows and ``limits.max_bytes`` bytes come back (``truncated`` says so);
* the statement is cancelled after ``limits.timeout_s`` (:class:`~catalog.errors.QueryTimeoutError`);
* writes are impossible at the driver/transaction level, not by string checks.

Governed execution (the second wall)
    The compiler wraps every product read in a *governed source* (a subquery marked with a
    :class:`~catalog.governed_source.GovernedMark`). :meth:`Connector.prepare` binds each marked source to
    what the store enforces itself — a view the statement must read through, named by a digest of
    its body — and returns a :class:`Prepared` statement. ``execute(..., governed=True)`` refuses a
    statement that carries no governed source and runs the rest behind the store's own wall, so a
    statement that escaped the SQL rewrite (a raw table reference, a system catalog) is refused by
    the store. Stores that have no such wall say so with ``capabilities.supports_store_governance``.

Sync drivers run in a worker thread through ``anyio.to_thread``. Callers plan on
:class:`Capabilities` flags, never on ``isinstance``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlglot import exp

from catalog.contract import ColumnType
from catalog.errors import QueryExecutionError
from catalog.governed_source import GovernedMark, GovernedStatement
from catalog.query import Limits, RowSet
from connectors._governed import cte_names, governed_sources, physical_tables

__all__ = [
    "Capabilities",
    "ConnectionConfig",
    "Connector",
    "GovernedRelation",
    "IntrospectedColumn",
    "Prepared",
    "TableSchema",
    "estimate_row_bytes",
]


class ConnectionConfig(BaseModel):
    """A named store, as declared under ``connections:`` in dataproducts.yaml.

    ``kind`` picks the connector (entry-point group ``dataproducts.connectors``): ``sqlite``,
    ``postgresql``, ``duckdb``. SQLite takes ``path`` (or a ``sqlite:///`` ``url``), PostgreSQL ``url``;
    DuckDB takes ``path`` (a database file) and/or ``files`` (view name → Parquet/CSV path or glob).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: str
    url: SecretStr | None = None
    path: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class Capabilities(BaseModel):
    """What a connector's store can do, for callers that plan on it (a flag no caller reads is not kept)."""

    model_config = ConfigDict(frozen=True)

    #: The store has ``md5(text)``, the hex digest of the UTF-8 text (the ``hash`` mask uses it).
    supports_md5: bool = True
    #: The store itself refuses reads outside a governed statement's governed sources.
    supports_store_governance: bool = False


class IntrospectedColumn(BaseModel):
    name: str
    native_type: str
    type: ColumnType
    nullable: bool = True
    #: How ``type`` was found when the store declares none (SQLite): from a sample of stored values.
    inferred: str | None = None


class TableSchema(BaseModel):
    table: str
    columns: list[IntrospectedColumn]
    primary_key: list[str] = Field(default_factory=list)
    row_count: int | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class GovernedRelation:
    """One governed source of a :class:`Prepared` statement, bound to what the store enforces.

    ``name`` is the relation the statement reads in its place (a view named by a digest of its
    body) and ``body`` the source's SELECT in the store's dialect with physical names qualified;
    both are empty when the store runs the body inline. ``objects`` are the physical objects it
    reads as the store names them (``main.people``, ``public.people``); ``scopes`` are the names
    under which the store may report the body's reads (the view and the CTEs inside it).
    ``filters_rows`` says the body drops rows (row filters, a filtering source query): the store
    must then apply its filters before any condition of the statement around it.
    """

    product: str
    name: str
    body: str
    objects: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    filters_rows: bool = False


@dataclass(frozen=True)
class Prepared:
    """A governed statement bound for one connection: the SQL text to run and the relations it reads.

    Build it with :meth:`Connector.prepare`; it can be cached and run again and again. It always
    runs behind the store's wall, on the connection it was prepared for. ``ctes`` are the names the
    statement defines for itself (lower-cased), which a store may report read like tables.
    """

    connection: str
    sql: str
    relations: tuple[GovernedRelation, ...]
    ctes: tuple[str, ...] = ()
    limits: Limits | None = None  # what it runs under when prepared from a GovernedStatement
    #: Values of the statement's placeholders (``$p0``, ``:p0``, ``%(p0)s``… as the dialect writes them);
    #: a cached form is bound to a call's values with :meth:`bind`.
    parameters: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: The SQL text around each placeholder, for a store that splices quoted values in itself (``sql``
    #: split at its placeholders; empty otherwise). ``template[i]`` precedes ``placeholders[i]``.
    template: tuple[str, ...] = ()
    placeholders: tuple[str, ...] = ()

    def bind(self, parameters: Mapping[str, Any]) -> Prepared:
        """The same statement with other placeholder values (checked by ``catalog.compile.bind_parameters``)."""
        if parameters.keys() != self.parameters.keys():
            raise QueryExecutionError(
                f"{self.connection!r}: the statement takes parameters {sorted(self.parameters)}, "
                f"not {sorted(parameters)}"
            )
        return replace(self, parameters=parameters)

    @property
    def objects(self) -> list[str]:
        """The physical objects the statement reads, sorted."""
        return sorted({o for r in self.relations for o in r.objects})


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


T = TypeVar("T")


class Connector(abc.ABC):
    """Base class of every store connector.

    Subclasses set ``kind`` and ``dialect`` (a sqlglot dialect name) and implement
    :meth:`introspect`, :meth:`list_assets` and :meth:`execute` (a sync driver runs in a worker thread).
    ``kind``, ``dialect`` and ``capabilities`` are class attributes: one class serves one kind.
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

    async def execute(
        self,
        statement: GovernedStatement | Prepared | exp.Query | str,
        limits: Limits | None = None,
        *,
        governed: bool = False,
    ) -> RowSet:
        """Run one SELECT read-only.

        A :class:`~catalog.governed_source.GovernedStatement` (what :class:`catalog.compiler.Compiler` builds)
        or a :class:`Prepared` runs behind the store's wall under the limits it carries. An AST, or
        text already rendered by :meth:`render`, runs under ``limits``; with ``governed=True`` it must
        carry governed sources and runs behind the wall too (see :meth:`prepare`). ``RowSet.objects``
        lists the physical objects a governed statement read.

        Raises:
            ValueError: no limits (a bare statement needs ``limits``).
            QueryTimeoutError: the statement ran longer than ``limits.timeout_s``.
            QueryExecutionError: the store rejected the statement (``.orig`` keeps the driver error),
                or a governed statement carries no governed source or reads outside them.
            ConnectorUnavailableError: the store cannot be reached.
        """
        if isinstance(statement, GovernedStatement):
            statement, limits, governed = self.prepare(statement), limits or statement.limits, True
        elif isinstance(statement, Prepared):
            limits, governed = limits or statement.limits, True
        if limits is None:
            raise ValueError(f"{self.name!r}: give the limits to run a statement that carries none under")
        return await self._execute(statement, limits, governed=governed)

    @abc.abstractmethod
    async def _execute(self, statement: exp.Query | str | Prepared, limits: Limits, *, governed: bool) -> RowSet:
        """Run one statement under ``limits`` (behind the wall when ``governed``; a :class:`Prepared` always)."""

    async def execute_then(self, statement: Prepared, then: Callable[[RowSet], T]) -> T:
        """Run a prepared statement as :meth:`execute` does, then ``then(rowset)`` in a worker thread.

        A store with a sync driver calls ``then`` in the very thread that ran the statement, once the
        store's connection is released, so the call crosses to a thread and back once, not twice.
        ``then`` may block (it never runs on the event loop); it is not called when the statement fails.

        Raises:
            ValueError: the statement carries no limits.
            QueryExecutionError, QueryTimeoutError, ConnectorUnavailableError: as :meth:`execute`.
            Exception: whatever ``then`` raises.
        """
        prepared = self.prepared(statement)
        if prepared.limits is None:
            raise ValueError(f"{self.name!r}: give the limits to run a statement that carries none under")
        return await self._execute_then(prepared, prepared.limits, then)

    async def _execute_then(self, prepared: Prepared, limits: Limits, then: Callable[[RowSet], T]) -> T:
        """Run ``prepared``, then ``then`` off the event loop; a sync driver overrides it to do both in one thread."""
        rowset = await self._execute(prepared, limits, governed=True)
        return await anyio.to_thread.run_sync(then, rowset)

    # -- governed execution ----------------------------------------------------------------------

    def prepare(self, statement: GovernedStatement | exp.Query) -> Prepared:
        """Bind every governed source of ``statement`` for this store (the statement is not changed).

        A :class:`~catalog.governed_source.GovernedStatement`'s limits travel with the prepared form.

        Raises:
            QueryExecutionError: the statement carries no governed source, or governed sources nest.
        """
        limits = statement.limits if isinstance(statement, GovernedStatement) else None
        bound = (statement.statement if isinstance(statement, GovernedStatement) else statement).copy()
        sources = governed_sources(bound)
        if not sources:
            raise QueryExecutionError(
                f"{self.name!r} runs governed statements only over governed sources, and this one reads none; "
                "compile it with catalog.compile or catalog.sqlguard"
            )
        if any(source is bound for source, _ in sources):
            raise QueryExecutionError(f"{self.name!r}: select from a governed source, it cannot be the statement")
        relations = tuple(self._bind_governed(source, mark) for source, mark in sources)
        self._check_prepared(bound, relations)
        parameters = statement.parameters if isinstance(statement, GovernedStatement) else {}
        template, placeholders = self._template(bound) if parameters else ((), ())
        return Prepared(
            self.name,
            self.render(bound),
            relations,
            tuple(sorted(cte_names(bound))),
            limits,
            dict(parameters),
            template,
            placeholders,
        )

    def prepared(self, statement: exp.Query | str | Prepared) -> Prepared:
        """``statement`` ready to run behind the store's wall (prepared here unless it already is).

        Raises:
            QueryExecutionError: SQL text (it carries no governed source), a statement prepared for
                another connection, or as :meth:`prepare`.
        """
        if isinstance(statement, Prepared):
            if statement.connection != self.name:
                raise QueryExecutionError(
                    f"a statement prepared for {statement.connection!r} cannot run on {self.name!r}"
                )
            return statement
        if isinstance(statement, str):
            raise QueryExecutionError(
                f"{self.name!r}: governed execution takes a statement AST or a Prepared, not SQL text"
            )
        return self.prepare(statement)

    def _bind_governed(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        """Bind one governed source in place. The default qualifies its physical names (see
        :meth:`_qualify`) and leaves the body inline: a store without a wall of its own."""
        objects = tuple(sorted({self._qualify(table) for table in physical_tables(source.this)}))
        return GovernedRelation(mark.product, "", "", objects)

    def _qualify(self, table: exp.Table) -> str:
        """Qualify one physical table of a governed body in place; return its qualified name."""
        return ".".join(part.name for part in table.parts)

    def _template(self, statement: exp.Query) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The text around each placeholder and the placeholders' names, for a store that splices values
        into the text itself (see :attr:`Prepared.template`); by default none: the driver binds them."""
        return (), ()

    def _check_prepared(self, statement: exp.Query, relations: tuple[GovernedRelation, ...]) -> None:  # noqa: B027
        """Refuse a bound statement the store's wall could not judge (a hook; nothing by default).

        Raises:
            QueryExecutionError: the statement cannot run behind the wall.
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
