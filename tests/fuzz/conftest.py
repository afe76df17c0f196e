"""Fixtures of the differential fuzzer: the demo workspace and one :class:`Differential` per store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyio.from_thread import start_blocking_portal

from servers.demo import DemoWorkspace, build_demo_workspace
from servers.service import DataProductsService
from tests.fuzz.harness import Differential
from tests.fuzz.oracle import open_oracle
from tests.fuzz.stores import STORES, open_store


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: differential fuzzing of run_sql against an oracle (runs by default)")


@pytest.fixture(scope="session")
def fuzz_workspace(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    return build_demo_workspace(tmp_path_factory.mktemp("fuzz") / "ws")


@pytest.fixture(scope="module", params=STORES)
def differential(request: pytest.FixtureRequest, fuzz_workspace: DemoWorkspace) -> Iterator[Differential]:
    """The product path of one store (service through a portal) beside each principal's oracle."""
    kind = request.param
    cluster = request.getfixturevalue("pg_cluster") if kind == "postgresql" else None
    module = request.module.__name__.rsplit(".", 1)[-1]
    store = open_store(
        kind, fuzz_workspace, pg_url=(lambda name: cluster.create_database(f"{module}_{name}")) if cluster else None
    )
    oracles = {
        name: open_oracle(store, name, pg_url=cluster.create_database(f"{module}_oracle_{name}") if cluster else None)
        for name in store.principals
    }
    try:
        with start_blocking_portal() as portal:
            service = DataProductsService.open(store.settings)
            try:
                yield Differential(store, service, portal, oracles)
            finally:
                portal.call(service.aclose)
    finally:
        for oracle in oracles.values():
            oracle.close()
