"""Metrics on SQLite, PostgreSQL and DuckDB equal a pure-Python computation over the same rows.

The demo's ``shop.orders`` and ``shop.customers`` contracts (their metrics — filtered, distinct,
derived — dimensions, relationship, row filter and masking) are pointed at tables filled with random
rows for each example; random requests (metrics, dimensions with grains, conditions, time ranges) run
through the real connectors as one governed statement, for a principal with the EU row filter and
masked e-mails and for one who sees everything. The Python oracle applies the row filter, the
conditions, the half-open time range, the LEFT JOIN to customers, the buckets of
:func:`catalog.timegrain.bucket_of` and the metric definitions by hand.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import math
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.compiler import Compiler
from catalog.contract import ProductContract, Source
from catalog.metric_query import MetricsRequest
from catalog.policy import GovernedView, govern
from catalog.principal import Principal
from catalog.query import Limits
from catalog.timegrain import bucket_of
from connectors import ConnectionConfig, Connector, connector_for
from servers.demo import DEMO_PRINCIPALS
from tests.pgcluster import PostgresCluster

CONTRACTS = Path(__file__).parents[2] / "servers" / "demo_contracts"
SALT = "metrics'salt"
EU = Principal(name="ana", roles=frozenset(DEMO_PRINCIPALS["ana"]))  # EU rows only, e-mails hashed
ALL = Principal(name="sam", roles=frozenset(DEMO_PRINCIPALS["sam"]))  # every row, raw e-mails
PROPERTIES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
REGIONS = ("EU", "US", "APAC")
ORDER_METRICS = ("order_count", "buyer_count", "delivered_orders", "lost_orders", "delivery_rate")
MD5 = re.compile(r"^[0-9a-f]{32}$")
#: Instants at the edges of buckets: ISO week and year ends, leap days, midnight and the hour.
EDGES = [
    dt.datetime(2023, 12, 31, 23, 59, 59),
    dt.datetime(2024, 1, 1, 0, 0, 0),
    dt.datetime(2024, 2, 29, 12, 30, 0),
    dt.datetime(2024, 3, 31, 23, 0, 0),
    dt.datetime(2024, 4, 1, 0, 0, 0),
    dt.datetime(2024, 12, 29, 23, 59, 59),  # a Sunday: ISO week 52
    dt.datetime(2024, 12, 30, 0, 0, 0),  # the Monday of ISO week 1 of 2025
    dt.datetime(2025, 1, 1, 0, 0, 1),
]


def demo_contract(name: str) -> ProductContract:
    text = (CONTRACTS / f"{name}.yaml").read_text(encoding="utf-8")
    return ProductContract.model_validate(yaml.safe_load(text))


ORDERS = demo_contract("shop.orders")
CUSTOMERS = demo_contract("shop.customers")
# a dimension on a masked column, to see that grouping by it shows masked values only
CUSTOMERS = CUSTOMERS.model_copy(
    update={
        "dimensions": [
            *CUSTOMERS.dimensions,
            CUSTOMERS.dimensions[0].model_copy(update={"name": "email", "column": "email"}),
        ]
    }
)

# -- the stores ---------------------------------------------------------------------------------------

_ORDERS_DDL = "(order_id INTEGER, customer_id INTEGER, ordered_at TIMESTAMP, status TEXT, region TEXT, channel TEXT)"
_CUSTOMERS_DDL = (
    "(customer_id INTEGER, full_name TEXT, email TEXT, phone TEXT, country TEXT, city TEXT, signup_date DATE, "
    "marketing_opt_in BOOLEAN)"
)
_tables = itertools.count()


def _sqlite_text(value: Any) -> Any:
    """SQLite keeps times as text: ``YYYY-MM-DD HH:MM:SS`` and ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, dt.date) else value


class Stores:
    """Fresh tables (and, for the file stores, a fresh connector) for every example, on one store kind."""

    def __init__(self, kind: str, tmp: Path, pg_url: str | None) -> None:
        self.kind, self.tmp, self.pg_url = kind, tmp, pg_url
        self._pg_connector: Connector | None = None

    def load(self, orders: list[tuple[Any, ...]], customers: list[tuple[Any, ...]]) -> tuple[Connector, str]:
        """Write the rows into new tables; a connector that reads them and the tables' suffix."""
        n = next(_tables)
        statements = [f"CREATE TABLE orders_{n} {_ORDERS_DDL}", f"CREATE TABLE customers_{n} {_CUSTOMERS_DDL}"]
        inserts = [(f"orders_{n}", orders, 6), (f"customers_{n}", customers, 8)]
        if self.kind == "sqlite":
            path = self.tmp / f"shop{n}.sqlite"
            with sqlite3.connect(path) as conn:
                for ddl in statements:
                    conn.execute(ddl)
                for table, rows, width in inserts:
                    text = [tuple(_sqlite_text(v) for v in r) for r in rows]
                    conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * width)})", text)
            conn.close()
            return connector_for(ConnectionConfig(name="shop", kind="sqlite", path=str(path))), str(n)
        if self.kind == "duckdb":
            path = self.tmp / f"shop{n}.duckdb"
            with duckdb.connect(str(path)) as conn:
                for ddl in statements:
                    conn.execute(ddl)
                for table, rows, width in inserts:
                    if rows:
                        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * width)})", rows)
            return connector_for(ConnectionConfig(name="shop", kind="duckdb", path=str(path))), str(n)
        import psycopg

        assert self.pg_url is not None
        with psycopg.connect(self.pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            for ddl in statements:
                conn.execute(ddl)  # type: ignore[arg-type]
            with conn.cursor() as cur:
                for table, rows, width in inserts:
                    if rows:
                        cur.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * width)})", rows)  # type: ignore[arg-type]
        if self._pg_connector is None:
            self._pg_connector = connector_for(
                ConnectionConfig.model_validate({"name": "shop", "kind": "postgresql", "url": self.pg_url})
            )
        return self._pg_connector, str(n)

    def done(self, connector: Connector) -> None:
        if connector is not self._pg_connector:
            anyio.run(connector.aclose)

    def close(self) -> None:
        if self._pg_connector is not None:
            anyio.run(self._pg_connector.aclose)


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"metrics-{kind}")
    url = None
    if kind == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"metrics_{tmp.name}")
    built = Stores(kind, tmp, url)
    try:
        yield built
    finally:
        built.close()


# -- the data and the requests -------------------------------------------------------------------------

instants = st.one_of(
    st.sampled_from(EDGES),
    st.datetimes(min_value=dt.datetime(2023, 12, 20), max_value=dt.datetime(2025, 1, 10)).map(
        lambda t: t.replace(microsecond=0)
    ),
)
orders_rows = st.lists(
    st.tuples(
        st.integers(1, 7),  # customers 1..5 exist; 6 and 7 do not (the LEFT JOIN keeps their orders)
        instants,
        st.sampled_from(STATUSES),
        st.sampled_from(REGIONS),
        st.sampled_from(["web", "mobile_app"]),
    ),
    max_size=40,
)
customer_rows = st.lists(
    st.tuples(st.sampled_from(["DE", "US", "JP", None]), st.sampled_from(["it's@x.org", "b@x.org", "c\\@x.org"])),
    min_size=5,
    max_size=5,
)
grains = st.sampled_from(["hour", "day", "week", "month", "quarter", "year"])
dimension_pool = st.sampled_from(["region", "status", "shop.customers.country", "shop.customers.email", "order_time"])
days = st.dates(min_value=dt.date(2023, 12, 25), max_value=dt.date(2025, 1, 5)).map(dt.date.isoformat)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    metrics = draw(st.lists(st.sampled_from(ORDER_METRICS), min_size=1, max_size=3, unique=True))
    group_by = [
        {"dimension": name, "grain": draw(grains)} if name == "order_time" else {"dimension": name}
        for name in draw(st.lists(dimension_pool, max_size=2, unique=True))
    ]
    where = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda v: {"dimension": "status", "op": "in", "value": v},
                    st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3),
                ),
                st.builds(lambda v: {"dimension": "region", "op": "!=", "value": v}, st.sampled_from(REGIONS)),
                st.builds(
                    lambda v: {"dimension": "shop.customers.country", "op": "=", "value": v},
                    st.sampled_from(["DE", "US"]),
                ),
            ),
            max_size=2,
        )
    )
    request: dict[str, Any] = {"metrics": metrics, "product": "shop.orders", "group_by": group_by, "where": where}
    start, end = draw(st.one_of(st.none(), days)), draw(st.one_of(st.none(), days))
    if start or end:
        request["time_range"] = {"start": start, "end": end, "dimension": "order_time"}
    return request


# -- the oracle -------------------------------------------------------------------------------------------


def masked_email(email: str | None) -> str | None:
    return None if email is None else hashlib.md5((SALT + email).encode("utf-8")).hexdigest()


def expected(
    request: MetricsRequest, principal: Principal, orders: list[tuple[Any, ...]], customers: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[Any]]:
    """Group key -> metric values, computed in Python."""
    by_id = {c[0]: c for c in customers}
    hashed = "pii-reader" not in principal.roles

    def value(order: tuple[Any, ...], name: str, grain: str | None = None) -> Any:
        customer = by_id.get(order[1])
        if name == "order_time":
            return bucket_of(order[2], grain or "hour")
        if name == "shop.customers.country":
            return customer[4] if customer else None
        if name == "shop.customers.email":
            email = customer[2] if customer else None
            return masked_email(email) if hashed else email
        return {"region": order[4], "status": order[3]}[name]

    ops: dict[str, Callable[[Any, Any], bool]] = {
        "in": lambda a, b: a in b,
        "!=": lambda a, b: a is not None and a != b,
        "=": lambda a, b: a is not None and a == b,
    }
    rows = [o for o in orders if "sales-eu" not in principal.roles or o[4] == "EU"]  # the demo's row filter
    rows = [o for o in rows if all(ops[c.op](value(o, c.dimension), c.value) for c in request.where)]
    if request.time_range is not None:
        start, end = request.time_range.start, request.time_range.end
        rows = [o for o in rows if (start is None or o[2] >= dt.datetime.fromisoformat(start))]
        rows = [o for o in rows if (end is None or o[2] < dt.datetime.fromisoformat(end))]
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for order in rows:
        groups[tuple(value(order, g.dimension, g.grain) for g in request.group_by)].append(order)
    if not request.group_by:
        groups.setdefault((), [])

    def metric(name: str, members: list[tuple[Any, ...]]) -> Any:
        delivered = sum(o[3] == "delivered" for o in members)
        return {
            "order_count": len(members),
            "buyer_count": len({o[1] for o in members}),
            "delivered_orders": delivered,
            "lost_orders": sum(o[3] in ("cancelled", "returned") for o in members),
            "delivery_rate": delivered / len(members) if members else None,
        }[name]

    return {key: [metric(m, members) for m in request.metrics] for key, members in groups.items()}


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float | decimal.Decimal) or isinstance(b, float | decimal.Decimal):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return bool(a == b)


# -- the properties ----------------------------------------------------------------------------------------


def run(
    stores: Stores, request: MetricsRequest, principal: Principal, orders: list[Any], customers: list[Any]
) -> tuple[list[str], list[list[Any]]]:
    connector, suffix = stores.load(orders, customers)
    try:
        views: dict[str, GovernedView] = {}
        for contract, table in ((ORDERS, f"orders_{suffix}"), (CUSTOMERS, f"customers_{suffix}")):
            pointed = contract.model_copy(update={"source": Source(connection="shop", table=table)})
            views[contract.name] = govern(pointed, principal)
        compiled = Compiler(connector.dialect, SALT, Limits(max_rows=1000)).metrics(request, views)
        rowset = anyio.run(connector.execute, compiled)
        return compiled.columns, compiled.rows(rowset)
    finally:
        stores.done(connector)


@PROPERTIES
@given(data=st.data(), orders=orders_rows, customers=customer_rows, request=requests())
def test_every_demo_order_metric_equals_python_over_the_rows_the_principal_may_see(
    stores: Stores, data: st.DataObject, orders: list[Any], customers: list[Any], request: dict[str, Any]
) -> None:
    principal = data.draw(st.sampled_from([EU, ALL]))
    order_rows = [(i, *o) for i, o in enumerate(orders, start=1)]
    customer_rows = [
        (i, f"Name {i}", email, None, country, "City", dt.date(2024, 1, i), i % 2 == 0)
        for i, (country, email) in enumerate(customers, start=1)
    ]
    parsed = MetricsRequest.model_validate(request)
    columns, rows = run(stores, parsed, principal, order_rows, customer_rows)
    width = len(parsed.group_by)
    got = {tuple(row[:width]): row[width:] for row in rows}
    want = expected(parsed, principal, order_rows, customer_rows)
    assert len(got) == len(rows), "one row per group"
    assert set(got) == set(want), (columns, rows)
    for key, values in want.items():
        assert all(same(a, b) for a, b in zip(got[key], values, strict=True)), (key, got[key], values)
    text = repr(rows)
    if principal is EU:
        assert "@x.org" not in text  # grouped by e-mail: hashes only
        assert all(
            MD5.match(v) for row in rows for v in row[:width] if isinstance(v, str) and "@" not in v and len(v) == 32
        )


CUSTOMER_METRICS = ("customer_count", "opted_in_customers", "opt_in_rate")
signups = st.dates(min_value=dt.date(2023, 12, 25), max_value=dt.date(2025, 1, 5))


@st.composite
def customer_requests(draw: st.DrawFn) -> dict[str, Any]:
    metrics = draw(st.lists(st.sampled_from(CUSTOMER_METRICS), min_size=1, max_size=3, unique=True))
    names = draw(st.lists(st.sampled_from(["country", "marketing_opt_in", "signup"]), max_size=2, unique=True))
    group_by = [
        {"dimension": n, "grain": draw(st.sampled_from(["week", "month", "quarter", "year"]))}
        if n == "signup"
        else {"dimension": n}
        for n in names
    ]
    request: dict[str, Any] = {"metrics": metrics, "product": "shop.customers", "group_by": group_by}
    start, end = draw(st.one_of(st.none(), days)), draw(st.one_of(st.none(), days))
    if start or end:
        request["time_range"] = {"start": start, "end": end, "dimension": "signup"}
    return request


@PROPERTIES
@given(
    people=st.lists(st.tuples(st.sampled_from(["DE", "US", None]), signups, st.booleans()), min_size=1, max_size=30),
    request=customer_requests(),
)
def test_every_demo_customer_metric_equals_python_over_random_customers(
    stores: Stores, people: list[tuple[Any, ...]], request: dict[str, Any]
) -> None:
    customers = [
        (i, f"Name {i}", f"p{i}@x.org", None, country, "City", signup, opted)
        for i, (country, signup, opted) in enumerate(people, start=1)
    ]
    parsed = MetricsRequest.model_validate(request)
    _, rows = run(stores, parsed, ALL, [], customers)
    if parsed.time_range is not None:
        start, end = parsed.time_range.start, parsed.time_range.end
        customers = [c for c in customers if start is None or c[6] >= dt.date.fromisoformat(start)]
        customers = [c for c in customers if end is None or c[6] < dt.date.fromisoformat(end)]

    def key(customer: tuple[Any, ...]) -> tuple[Any, ...]:
        values = {"country": customer[4], "marketing_opt_in": int(customer[7])}
        return tuple(bucket_of(customer[6], g.grain) if g.grain else values[g.dimension] for g in parsed.group_by)

    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for customer in customers:
        groups[key(customer)].append(customer)
    if not parsed.group_by:
        groups.setdefault((), [])
    width = len(parsed.group_by)
    got = {tuple(int(v) if isinstance(v, bool) else v for v in row[:width]): row[width:] for row in rows}
    assert set(got) == set(groups), rows
    for group, members in groups.items():
        opted = sum(bool(c[7]) for c in members)
        values = {
            "customer_count": len(members),
            "opted_in_customers": opted,
            "opt_in_rate": opted / len(members) if members else None,
        }
        assert all(same(a, values[m]) for a, m in zip(got[group], parsed.metrics, strict=True)), (group, got[group])
