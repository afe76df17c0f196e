"""Shared fixtures: a throwaway PostgreSQL cluster for the session, one fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.pgcluster import PostgresCluster, find_pg_bindir

_db_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/connectors/search/conftest.py: pytest takes options only from the rootdir's conftests.
    parser.addoption(
        "--es-url", default=None, help="Elasticsearch URL for the search-store tests (else DATAPRODUCTS_ES_URL)"
    )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if find_pg_bindir() is None:
        pytest.fail(
            "PostgreSQL binaries are required (apt-get install postgresql-15, or set DATAPRODUCTS_PG_BINDIR); "
            ".ci/run installs them"
        )
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of a new, empty PostgreSQL database on the session cluster."""
    return pg_cluster.create_database(f"t{next(_db_counter)}")
