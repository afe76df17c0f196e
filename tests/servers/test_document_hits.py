"""``search_documents`` returns one hit per row (its best chunk, how many chunks matched) unless asked
for raw chunks. On a fresh demo workspace whose handbook holds one long page, indexed by the real model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from catalog.loader import load_contract_file
from catalog.registry import Registry
from servers.cli.retrieval_cmds import index_workspace
from servers.demo import build_demo_workspace
from servers.mcp import create_server
from servers.settings import Settings, load_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def long_handbook(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A demo workspace whose handbook also holds every page in one long page (several chunks)."""
    workspace = build_demo_workspace(tmp_path_factory.mktemp("long-handbook") / "ws")
    pages = sorted((workspace.path / "data" / "handbook").glob("*.md"))
    whole = "\n\n".join(page.read_text(encoding="utf-8") for page in pages)
    (workspace.path / "data" / "handbook" / "complete-handbook.md").write_text(whole, encoding="utf-8")
    settings = load_settings(workspace.config_path)
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="tests")
    finally:
        registry.close()
    index_workspace(settings, product="docs.handbook")
    return settings


async def hits(settings: Settings, **args: Any) -> list[dict[str, Any]]:
    async with Client(create_server(settings, principal=settings.principal("sam"))) as client:
        result = await client.call_tool("search_documents", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return list(result.structured_content["hits"])


def row_of(hit: dict[str, Any]) -> tuple[str, str]:
    return hit["product"], json.dumps(hit["key"], sort_keys=True)


@pytest.mark.parametrize(
    "query", ["how many days to return an item for a refund", "damaged parcel on delivery", "support opening hours"]
)
async def test_search_documents_returns_one_hit_per_row_and_counts_the_chunks_that_matched(
    long_handbook: Settings, query: str
) -> None:
    chunks = await hits(long_handbook, query=query, product="docs.handbook", k=5, chunks=True)
    rows = await hits(long_handbook, query=query, product="docs.handbook", k=5)
    chunk_rows = [row_of(h) for h in chunks]
    assert len(set(chunk_rows)) < len(chunk_rows), "the long page matches with several chunks"
    assert len({row_of(h) for h in rows}) == len(rows) == 5  # k counts distinct rows
    assert rows[0]["citation"] == chunks[0]["citation"]  # a row is shown by its best chunk
    matched = {row_of(h): h["matched"] for h in rows}
    for row in set(chunk_rows) & set(matched):
        assert matched[row] >= chunk_rows.count(row)
    [whole] = [h for h in rows if h["key"]["filename"].endswith("complete-handbook.md")]
    assert whole["matched"] > 1
    assert all(h["matched"] == 1 for h in chunks)
