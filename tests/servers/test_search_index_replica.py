"""The search index is a replica that says how old it is: an index run records the source's as_of in the
store, ``search_documents`` reports it (and a lag past ``retrieval.max_lag``), ``dataproducts replicas``
lists it, and a server warms the embedded store at start-up. A demo workspace indexed by the real model."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from typer.testing import CliRunner

from catalog.errors import ContractError
from catalog.loader import load_contract_file, parse_contracts
from catalog.registry import Registry
from connectors.search_embedded import EmbeddedSearchStore
from servers.cli import app
from servers.cli._common import console
from servers.cli.retrieval_cmds import index_workspace
from servers.demo import DemoWorkspace, build_demo_workspace
from servers.mcp import create_server
from servers.search_warmup import warm_search_store
from servers.service import DataProductsService
from servers.settings import Settings, load_settings

pytestmark = pytest.mark.anyio
#: The handbook pages' modification time: three days ago, to the second (the product's freshness as_of).
PAGES_CHANGED = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    """The demo with a handbook whose freshness is its pages' newest change and whose index may lag 1 day."""
    workspace = build_demo_workspace(tmp_path_factory.mktemp("search-replica") / "ws")
    for page in (workspace.path / "data" / "handbook").glob("*.md"):
        os.utime(page, (PAGES_CHANGED.timestamp(), PAGES_CHANGED.timestamp()))
    settings = load_settings(workspace.config_path)
    with Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace) as registry:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                if contract.name == "docs.handbook":
                    assert contract.retrieval is not None
                    contract = contract.model_copy(
                        update={
                            "sla": contract.sla.model_copy(update={"freshness_column": "last_modified"}),
                            "retrieval": contract.retrieval.model_copy(update={"max_lag": "1d"}),
                        }
                    )
                registry.register(contract, actor="tests")
    index_workspace(settings, product="docs.handbook")
    return workspace


@pytest.fixture
def settings(workspace: DemoWorkspace) -> Settings:
    return load_settings(workspace.config_path)


async def search(settings: Settings, **args: Any) -> dict[str, Any]:
    async with Client(create_server(settings, principal=settings.principal("sam"))) as client:
        result = await client.call_tool("search_documents", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_a_search_says_the_index_answered_as_of_the_source_state_its_run_read(settings: Settings) -> None:
    found = await search(settings, query="how many days to return an item for a refund", product="docs.handbook")

    assert found["hits"]
    assert found["store"] == {"name": "embedded", "as_of": PAGES_CHANGED.isoformat(), "fallback_reason": None}


async def test_an_index_older_than_its_max_lag_still_answers_and_says_so(settings: Settings) -> None:
    found = await search(settings, query="damaged parcel on delivery", product="docs.handbook")

    assert found["hits"]
    (warning,) = [w for w in found["warnings"] if "search index" in w]
    assert "docs.handbook is 3d" in warning and "beyond its max_lag of 1d" in warning
    assert "dataproducts index docs.handbook" in warning


async def test_a_search_over_several_products_gives_each_as_of_and_the_oldest(settings: Settings) -> None:
    found = await search(settings, query="refund for a damaged parcel")

    by_product = found["store"]["products"]
    assert by_product["docs.handbook"] == PAGES_CHANGED.isoformat()
    assert by_product["shop.reviews"] is None  # never indexed in this workspace: no state to report
    assert found["store"]["as_of"] is None  # the oldest is unknown


def test_replicas_lists_each_search_index_next_to_the_analytical_replicas(
    workspace: DemoWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)  # one line per store
    listing = CliRunner().invoke(app, ["--config", str(workspace.config_path), "replicas"])

    assert listing.exit_code == 0, listing.output
    lines = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if line.count("│") > 2}
    handbook = lines["docs.handbook"]
    assert "embedded index" in handbook and "1d" in handbook and f"{PAGES_CHANGED:%Y-%m-%d}" in handbook
    assert "chunks" in handbook and "indexed" in handbook
    assert "never" in lines["shop.reviews"]
    assert "duckdb" in lines["shop.orders"]  # the analytical replica is listed as before


async def test_a_starting_server_builds_the_bm25_index_of_the_existing_store(settings: Settings) -> None:
    async with DataProductsService.open(settings) as service:
        store = await service.retrieval.store()
        assert isinstance(store, EmbeddedSearchStore)
        assert store._bm25 is None  # built lazily otherwise: FTS5 would rank the first query

        assert await warm_search_store(service.retrieval)
        assert store._bm25 is not None


async def test_a_damaged_store_is_logged_at_start_up_and_the_server_starts(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = tmp_path / "search.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    broken = settings.model_copy(update={"search": settings.search.model_copy(update={"path": str(damaged)})})
    with caplog.at_level(logging.WARNING, logger="servers.search_warmup"):
        async with Client(create_server(broken, principal=broken.principal("sam"))) as client:
            started = time.monotonic()
            while "not warmed" not in caplog.text and time.monotonic() - started < 10:
                await anyio.sleep(0.05)
            assert (await client.list_tools()).tools
    assert "search store not warmed" in caplog.text


def test_a_retrieval_max_lag_that_is_no_duration_is_refused_where_it_is(workspace: DemoWorkspace) -> None:
    text = (workspace.path / "contracts" / "docs.handbook.yaml").read_text(encoding="utf-8")
    text = text.replace("chunk: {size: 600, overlap: 80}}", "chunk: {size: 600, overlap: 80}, max_lag: one day}")
    assert "max_lag: one day" in text
    with pytest.raises(ContractError) as refused:
        parse_contracts(text, file="docs.handbook.yaml")
    assert "retrieval.max_lag" in str(refused.value) and "invalid duration 'one day'" in str(refused.value)
