"""Time buckets are the same on SQLite, PostgreSQL and DuckDB, and equal Python's ISO bucketing.

Each store buckets the same instants (ISO week boundaries, year ends, leap days, random times) at
every grain, from a timestamp column and from a date column; the text of every bucket must equal
:func:`catalog.timegrain.bucket_of`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from catalog.timegrain import GRAINS, bucket, bucket_of, bucket_text
from tests.pgcluster import PostgresCluster

EDGES = [
    dt.datetime(2020, 2, 29, 23, 59, 59),  # leap day
    dt.datetime(2020, 12, 31, 23, 59, 59),  # Thursday: ISO week 53 of 2020
    dt.datetime(2021, 1, 3, 12, 0, 0),  # Sunday: still ISO week 53 of 2020, bucket starts 2020-12-28
    dt.datetime(2021, 1, 4, 0, 0, 0),  # Monday: ISO week 1 of 2021
    dt.datetime(2024, 2, 29, 0, 0, 0),
    dt.datetime(2024, 3, 1, 0, 0, 0),
    dt.datetime(2024, 9, 30, 23, 59, 59),  # quarter end
    dt.datetime(2024, 12, 29, 23, 0, 0),  # Sunday before the Monday that starts ISO 2025-W01
    dt.datetime(2024, 12, 30, 0, 30, 0),
    dt.datetime(2025, 1, 1, 0, 0, 0),
    dt.datetime(1999, 12, 31, 23, 59, 59),
]

Run = Callable[[str], list[tuple[Any, ...]]]


class Store:
    """One store holding table ``t(ts TIMESTAMP, d DATE)``, refilled for each example."""

    def __init__(self, kind: str, dialect: str, run: Run, fill: Callable[[list[dt.datetime]], None]) -> None:
        self.kind, self.dialect, self.run, self.fill = kind, dialect, run, fill

    def buckets(self, instants: list[dt.datetime]) -> dict[str, list[tuple[str | None, str | None]]]:
        self.fill(instants)
        found: dict[str, list[tuple[str | None, str | None]]] = {}
        for grain in GRAINS:
            ts = bucket(exp.column("ts"), grain, dialect=self.dialect).sql(dialect=self.dialect)
            dated = bucket(exp.column("d"), grain, dialect=self.dialect, date=True)
            day = "NULL" if grain == "hour" else dated.sql(dialect=self.dialect)
            rows = self.run(f"SELECT {ts}, {day} FROM t ORDER BY ts")
            found[grain] = [(bucket_text(a, grain), bucket_text(b, grain)) for a, b in rows]
        return found


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    kind = request.param
    ddl = "CREATE TABLE t (ts TIMESTAMP, d DATE)"
    if kind == "sqlite":
        lite = sqlite3.connect(":memory:")
        lite.execute(ddl)

        def fill_sqlite(instants: list[dt.datetime]) -> None:
            lite.execute("DELETE FROM t")
            lite.executemany(
                "INSERT INTO t VALUES (?, ?)", [(i.isoformat(sep=" "), i.date().isoformat()) for i in instants]
            )

        yield Store(kind, "sqlite", lambda sql: lite.execute(sql).fetchall(), fill_sqlite)
        lite.close()
    elif kind == "duckdb":
        duck = duckdb.connect()
        duck.execute(ddl)

        def fill_duckdb(instants: list[dt.datetime]) -> None:
            duck.execute("DELETE FROM t")
            duck.executemany("INSERT INTO t VALUES (?, ?)", [(i, i.date()) for i in instants])

        yield Store(kind, "duckdb", lambda sql: duck.execute(sql).fetchall(), fill_duckdb)
        duck.close()
    else:
        import psycopg

        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database("timegrain").replace("postgresql+psycopg://", "postgresql://")
        pg = psycopg.connect(url, autocommit=True)
        pg.execute(ddl)

        def fill_postgres(instants: list[dt.datetime]) -> None:
            pg.execute("DELETE FROM t")
            with pg.cursor() as cur:
                cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, i.date()) for i in instants])

        def run_postgres(sql: str) -> list[tuple[Any, ...]]:
            return pg.execute(sql).fetchall()  # type: ignore[arg-type]

        yield Store(kind, "postgres", run_postgres, fill_postgres)
        pg.close()


def python_buckets(instants: list[dt.datetime]) -> dict[str, list[tuple[str | None, str | None]]]:
    ordered = sorted(instants)
    return {g: [(bucket_of(i, g), None if g == "hour" else bucket_of(i.date(), g)) for i in ordered] for g in GRAINS}


def test_edge_instants_fall_in_the_same_iso_buckets_on_every_store(store: Store) -> None:
    assert store.buckets(EDGES) == python_buckets(EDGES)


def test_iso_weeks_start_on_monday_and_years_end_where_the_calendar_does(store: Store) -> None:
    found = store.buckets(EDGES)
    week = dict(zip(sorted(EDGES), (a for a, _ in found["week"]), strict=True))
    assert week[dt.datetime(2021, 1, 3, 12, 0, 0)] == "2020-12-28"
    assert week[dt.datetime(2024, 12, 30, 0, 30, 0)] == "2024-12-30"
    hour = dict(zip(sorted(EDGES), (a for a, _ in found["hour"]), strict=True))
    assert hour[dt.datetime(2020, 2, 29, 23, 59, 59)] == "2020-02-29T23:00:00"
    quarter = dict(zip(sorted(EDGES), (a for a, _ in found["quarter"]), strict=True))
    assert quarter[dt.datetime(2024, 9, 30, 23, 59, 59)] == "2024-07-01"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    instants=st.lists(
        st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 12, 31)).map(
            lambda t: t.replace(microsecond=0)
        ),
        min_size=1,
        max_size=30,
        unique=True,
    )
)
def test_random_instants_fall_in_the_same_buckets_on_every_store(store: Store, instants: list[dt.datetime]) -> None:
    assert store.buckets(instants) == python_buckets(instants)
