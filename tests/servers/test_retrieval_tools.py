"""Retrieval over MCP with the real local model: governance holds on every hit and in `ask`'s context."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from mcp import Client
from typer.testing import CliRunner

from catalog.errors import InvalidRequestError
from catalog.principal import Principal
from servers.cli import app
from servers.cli.retrieval_cmds import index_workspace
from servers.demo import DemoWorkspace
from servers.service import DataProductsService
from servers.settings import Settings, load_settings
from tests.servers.conftest import client_for

pytestmark = pytest.mark.anyio
runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(demo: DemoWorkspace) -> DemoWorkspace:
    """The demo workspace with its reviews, handbook and catalog indexed by the real GGUF model."""
    reports = index_workspace(load_settings(demo.config_path))
    assert {r.product for r in reports} >= {"shop.reviews", "docs.handbook"}
    return demo


async def hits(client: Client, **args: Any) -> list[dict[str, Any]]:
    result = await client.call_tool("search_documents", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return list(result.structured_content["hits"])


def review_regions(demo: DemoWorkspace) -> dict[int, str]:
    with sqlite3.connect(demo.path / "data" / "shop.db") as conn:
        return dict(conn.execute("select review_id, region from reviews").fetchall())


async def test_a_row_filtered_principal_never_gets_hits_from_rows_outside_the_filter(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    regions = review_regions(indexed)
    async with client_for(settings, "ana") as ana, client_for(settings, "sam") as sam:
        for query in ("arrived damaged box crushed", "delivery took two weeks", "stale coffee roast date"):
            mine = await hits(ana, query=query, product="shop.reviews", k=20)
            assert mine, query
            assert {regions[h["key"]["review_id"]] for h in mine} == {"EU"}
            everyone = await hits(sam, query=query, product="shop.reviews", k=20)
            assert {regions[h["key"]["review_id"]] for h in everyone} > {"EU"}


async def test_masked_fields_are_never_indexed_nor_returned(indexed: DemoWorkspace, settings: Settings) -> None:
    with sqlite3.connect(indexed.path / "data" / "shop.db") as conn:
        email = conn.execute("select reviewer_email from reviews limit 1").fetchone()[0]
    async with client_for(settings, "sam") as sam:
        found = await hits(sam, query=email, k=50)
    assert all(h["field"] != "reviewer_email" and email not in h["text"] for h in found)
    with sqlite3.connect(indexed.path / ".dataproducts" / "search.sqlite") as store:
        dump = "\n".join(store.iterdump())
    assert email not in dump


async def test_a_policy_question_finds_the_handbook_page_that_answers_it(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    async with client_for(settings, "ana") as ana:
        found = await hits(ana, query="how many days can a customer send items back for a refund", k=3)
    pages = [h["key"]["filename"].rsplit("/", 1)[-1] for h in found if h["product"] == "docs.handbook"]
    assert "returns-and-refunds.md" in pages
    assert all(h["citation"].startswith(f"{h['product']}[") for h in found)


async def test_product_search_is_semantic_once_the_catalog_is_indexed(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    async with client_for(settings, "ana") as ana:
        result = await ana.call_tool("search_products", {"query": "what do buyers complain about", "limit": 3})
    assert result.structured_content is not None
    assert "shop.reviews" in [p["name"] for p in result.structured_content["products"]]


async def test_a_product_the_principal_may_not_read_is_refused_with_the_reason(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    outsider = settings.model_copy(
        update={
            "principals": [*settings.principals, settings.principals[0].model_copy(update={"name": "eve", "roles": []})]
        }
    )
    async with client_for(outsider, "eve") as eve:
        refused = await eve.call_tool("search_documents", {"query": "refund", "product": "docs.handbook"})
        assert refused.is_error and "access_denied" in str(refused.content)
        assert await hits(eve, query="refund") == []


async def test_ask_context_holds_only_passages_the_principal_may_read(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    regions = review_regions(indexed)
    async with DataProductsService.open(settings) as service:
        passages = await service.ask_context(
            Principal(name="ana", roles=frozenset({"analyst", "sales-eu"})), "which grinder arrived broken", k=8
        )
    reviews = [p for p in passages if p.product == "shop.reviews"]
    assert reviews and {regions[p.key["review_id"]] for p in reviews} == {"EU"}


async def test_search_documents_k_above_the_limit_is_refused_with_the_maximum(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    most = settings.limits.max_hits
    sam = settings.principal("sam")
    async with DataProductsService.open(settings) as service:
        with pytest.raises(InvalidRequestError, match=f"k must be between 1 and {most} \\(limits.max_hits\\)"):
            await service.search_documents(sam, "refund", k=most + 1)


async def test_ask_with_a_thousand_passages_reads_them_back_in_bounded_batches(
    indexed: DemoWorkspace, settings: Settings
) -> None:
    """1,000 hits are re-read through the governed source; one OR of them all is too deep for SQLite."""
    regions = review_regions(indexed)
    assert len(regions) > 1000
    async with DataProductsService.open(settings) as service:
        passages = await service.ask_context(settings.principal("ana"), "delivery was late", k=1000)
        everyone = await service.ask_context(settings.principal("sam"), "delivery was late", k=1000)
    assert {regions[p.key["review_id"]] for p in passages if p.product == "shop.reviews"} == {"EU"}
    assert len(everyone) == 1000 and len({p.source for p in everyone}) == 1000


def test_ask_k_is_capped_with_a_message_that_states_the_maximum(indexed: DemoWorkspace) -> None:
    base = ["--config", str(indexed.config_path), "ask", "delivery was late", "--as", "sam", "--context-only"]
    result = runner.invoke(app, [*base, "--k", "1000"])
    assert result.exit_code == 0, result.output
    assert "[1] " in result.output
    refused = runner.invoke(app, [*base, "--k", "1001"])
    assert refused.exit_code == 1
    assert "k must be between 1 and 1000 (limits.max_hits), not 1001" in refused.output
    assert "Traceback" not in refused.output
