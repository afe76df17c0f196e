"""Fixtures of the differential fuzzer: the demo workspace and one :class:`Differential` per store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servers.demo import DemoWorkspace, build_demo_workspace
from tests.fuzz.harness import Differential
from tests.fuzz.runner import open_differential
from tests.fuzz.stores import STORES


@pytest.fixture(scope="session")
def fuzz_workspace(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    return build_demo_workspace(tmp_path_factory.mktemp("fuzz") / "ws")


@pytest.fixture(scope="module", params=STORES)
def differential(request: pytest.FixtureRequest, fuzz_workspace: DemoWorkspace) -> Iterator[Differential]:
    """The product path of one store (the service behind a portal) beside each principal's oracle."""
    create_database = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        prefix = request.module.__name__.rsplit(".", 1)[-1]

        def create_database(name: str) -> str:
            return cluster.create_database(f"{prefix}_{name}")

    with open_differential(request.param, fuzz_workspace, create_database=create_database) as differential:
        yield differential
