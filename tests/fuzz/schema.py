"""What the generator knows about a store: products, typed columns, sample values, join keys, physical names.

Built from the contracts as written and the raw rows (:class:`~tests.fuzz.stores.FuzzStore`), so sample
literals are real values — visible ones, values of rows the principal may not see (``APAC``) and raw
personal data (an exact e-mail address as a probe: it must never match).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp

from tests.fuzz.oracle import governed_tables
from tests.fuzz.stores import FuzzStore

__all__ = ["BOOL", "INT", "NUM", "TEXT", "TIME", "Column", "Join", "Product", "Profile", "profile_for"]

INT, NUM, TEXT, TIME, BOOL = "int", "num", "text", "time", "bool"
TYPES = (INT, NUM, TEXT, TIME, BOOL)
_TYPE_OF = {"integer": INT, "decimal": NUM, "float": NUM, "string": TEXT, "date": TIME, "timestamp": TIME}
_TYPE_OF["boolean"] = BOOL
SAMPLES = 12

# Join keys of the demo products: (left, right, [(left column, right column)]). Each join matches a
# bounded number of rows, so a statement never asks for a cross product of two large products.
JOINS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("shop.orders", "shop.customers", (("customer_id", "customer_id"),)),
    ("shop.order_lines", "shop.orders", (("order_id", "order_id"),)),
    ("shop.reviews", "shop.orders", (("order_id", "order_id"),)),
    ("shop.reviews", "shop.order_lines", (("order_id", "order_id"), ("sku", "sku"))),
    ("analytics.order_facts", "analytics.daily_sales", (("ordered_date", "sales_date"), ("region", "region"))),
    ("analytics.order_facts", "analytics.order_facts", (("order_id", "order_id"), ("line_no", "line_no"))),
    ("shop.orders", "shop.orders", (("order_id", "order_id"),)),
    ("shop.customers", "shop.customers", (("customer_id", "customer_id"),)),
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    samples: tuple[str, ...]  # SQL literals of real values


@dataclass(frozen=True)
class Product:
    name: str
    connection: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    physical: dict[str, tuple[str, ...]]  # tables its source reads -> the columns it reads of each

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[1]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Join:
    left: str
    right: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Profile:
    """Everything the generator draws from, for one store."""

    store: str
    products: tuple[Product, ...]
    joins: tuple[Join, ...]
    readable: dict[str, frozenset[str]]  # principal -> products it may read
    eu_only: frozenset[tuple[str, str]]  # (principal, product): every row it sees has region EU, others exist
    principals: tuple[str, ...]
    rich: bool  # EXTRACT, DATE_TRUNC, LEFT/RIGHT, LPAD, REVERSE, SPLIT_PART, STDDEV (not SQLite)
    folds_quoted: bool  # "Email" means email (SQLite, DuckDB); PostgreSQL keeps quoted case

    def product(self, name: str) -> Product:
        return next(p for p in self.products if p.name == name)

    @property
    def connections(self) -> tuple[str, ...]:
        return tuple(sorted({p.connection for p in self.products}))


def profile_for(store: FuzzStore) -> Profile:
    products = []
    for name in store.products:
        contract, raw = store.contracts[name], store.raw[name]
        columns = []
        for index, spec in enumerate(contract["columns"]):
            kind = _TYPE_OF[spec["type"]]
            values = sorted({r[index] for r in raw.rows if r[index] is not None}, key=str)
            step = max(1, len(values) // SAMPLES)
            columns.append(Column(spec["name"], kind, tuple(_literal(v, kind) for v in values[::step][:SAMPLES])))
        products.append(
            Product(
                name=name,
                connection=store.connection_of(name),
                columns=tuple(columns),
                key=tuple(contract.get("primary_key") or ()),
                physical=_physical(contract),
            )
        )
    names = {p.name for p in products}
    joins = tuple(Join(left, right, pairs) for left, right, pairs in JOINS if left in names and right in names)
    views = {p: governed_tables(store, p) for p in store.principals}
    readable = {p: frozenset(tables) for p, tables in views.items()}
    eu_only = frozenset(
        (principal, name)
        for principal, tables in views.items()
        for name, table in tables.items()
        if "region" in table.columns
        and {r[table.columns.index("region")] for r in table.rows} == {"EU"}
        and len(table.rows) < len(store.raw[name].rows)
    )
    return Profile(
        store=store.kind,
        products=tuple(products),
        joins=joins,
        readable=readable,
        eu_only=eu_only,
        principals=tuple(sorted(store.principals)),
        rich=store.kind != "sqlite",
        folds_quoted=store.kind != "postgresql",
    )


def _physical(contract: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The physical tables a contract's source reads and the columns it reads of each."""
    source = contract["source"]
    if source.get("table"):
        return {source["table"].rsplit(".", 1)[-1]: tuple(c["name"] for c in contract["columns"])}
    query = sqlglot.parse_one(source["query"])
    tables = {t.alias_or_name: t.name for t in query.find_all(exp.Table)}
    read: dict[str, set[str]] = {name: set() for name in tables.values()}
    for column in query.find_all(exp.Column):
        if column.table in tables:
            read[tables[column.table]].add(column.name)
    return {name: tuple(sorted(columns)) for name, columns in read.items()}


def _literal(value: Any, kind: str) -> str:
    """A SQL literal of a real value, written so that every engine reads it as ``kind``."""
    if kind == BOOL:
        return "TRUE" if value else "FALSE"
    if kind in (INT, NUM):
        text = str(int(value)) if kind == INT else str(Decimal(str(value)).quantize(Decimal("0.01")))
        return f"({text})" if text.startswith("-") else text
    if kind == TIME:
        if isinstance(value, dt.datetime):
            return f"CAST('{value.isoformat(sep=' ')}' AS TIMESTAMP)"
        if isinstance(value, dt.date):
            return f"CAST('{value.isoformat()}' AS DATE)"
        text = str(value)
        return f"CAST('{text}' AS {'DATE' if len(text) == 10 else 'TIMESTAMP'})"
    return "'" + str(value).replace("'", "''") + "'"
