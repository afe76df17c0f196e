"""What answers cost an agent in tokens: tool result text and the tool list, before and after leaning.

On the demo workspace, through an in-process MCP client, it prints side by side:

* the text content of a ``--rows``-row ``query_product`` result (``shop.orders``) as the SDK writes it
  by default (the structured content as indented JSON), as compact JSON, and as the server writes it
  now (:mod:`servers.result_text`), in tokens (characters / 4), with the time each takes to write;
* ``tools/list`` as the SDK derives it from the tool functions and as the server lists it now
  (:mod:`servers._tool_listing`), for the first five tools and for all of them.

Targets, printed beside the figures: the result text at most 0.6x the indented JSON; the five tools'
listing at most 2,000 tokens. Token counts are deterministic; only the write times vary.

    python bench/answer_tokens.py            # --rows 100
    python bench/answer_tokens.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import anyio  # noqa: E402
import pydantic_core  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from catalog.loader import load_contract_file  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.mcp import create_server  # noqa: E402
from servers.result_text import result_text  # noqa: E402
from servers.settings import Settings, load_settings  # noqa: E402

FIRST_FIVE = ("search_products", "describe_product", "query_product", "run_sql", "search_documents")
TEXT_MAX_RATIO = 0.6
FIVE_TOOLS_MAX_TOKENS = 2_000


def tokens(text: str) -> float:
    return len(text) / 4


def listing_tokens(tools: list[Any], names: tuple[str, ...] | None = None) -> float:
    chosen = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    chosen = [t for t in chosen if names is None or t["name"] in names]
    return tokens(json.dumps({"tools": chosen}, separators=(",", ":"), ensure_ascii=False))


def write_us(write: Callable[[], object], repeat: int = 200) -> float:
    """Median microseconds ``write`` takes."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        write()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def demo_settings(root: Path) -> Settings:
    workspace = build_demo_workspace(root / "ws")
    settings = load_settings(workspace.config_path)
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="bench")
    finally:
        registry.close()
    return settings


async def run(rows: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        settings = demo_settings(Path(tmp))
        server = create_server(settings, principal=settings.principal("sam"))
        full_tools = await MCPServer.list_tools(server)
        async with Client(server) as client:
            lean_tools = (await client.list_tools()).tools
            result = await client.call_tool("query_product", {"product": "shop.orders", "limit": rows})
    structured = result.structured_content
    assert structured is not None and not result.is_error, result.content
    text = "".join(getattr(c, "text", "") for c in result.content)
    indented = pydantic_core.to_json(structured, indent=2).decode()
    compact = json.dumps(structured, separators=(",", ":"), ensure_ascii=False)

    console = Console()
    answers = Table(title=f"text content of a {structured['row_count']}-row query_product result")
    for column in ("form", "tokens", "x indented", "write µs"):
        answers.add_column(column, justify="right" if column != "form" else "left")
    forms = [
        ("indented JSON (SDK default)", indented, lambda: pydantic_core.to_json(structured, indent=2)),
        ("compact JSON", compact, lambda: json.dumps(structured, separators=(",", ":"), ensure_ascii=False)),
        ("result text (now)", text, lambda: result_text(structured)),
    ]
    for name, written, write in forms:
        ratio = tokens(written) / tokens(indented)
        answers.add_row(name, f"{tokens(written):,.0f}", f"{ratio:.2f}", f"{write_us(write):,.0f}")
    console.print(answers)
    text_ratio = tokens(text) / tokens(indented)
    console.print(f"target: result text ≤ {TEXT_MAX_RATIO}x the indented JSON: {text_ratio:.2f}x")

    listing = Table(title="tools/list, tokens (chars/4 of its JSON)")
    for column in ("tools", "SDK-derived", "listed now", "x"):
        listing.add_column(column, justify="right" if column != "tools" else "left")
    five_now = listing_tokens(lean_tools, FIRST_FIVE)
    for name, names in (("first five", FIRST_FIVE), (f"all {len(lean_tools)}", None)):
        before, now = listing_tokens(full_tools, names), listing_tokens(lean_tools, names)
        listing.add_row(name, f"{before:,.0f}", f"{now:,.0f}", f"{now / before:.2f}")
    console.print(listing)
    console.print(f"target: five tools ≤ {FIVE_TOOLS_MAX_TOKENS:,} tokens: {five_now:,.0f}")
    return text_ratio <= TEXT_MAX_RATIO and five_now <= FIVE_TOOLS_MAX_TOKENS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100, help="rows of the query_product result (default 100)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    met = anyio.run(run, args.rows)
    if args.check and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
