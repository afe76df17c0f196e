"""Document products: a folder of Markdown files read through DuckDB as one row per file."""

from __future__ import annotations

from pathlib import Path

import anyio
import sqlglot

from catalog.query import Limits
from connectors import connector_for
from connectors.base import ConnectionConfig


def test_a_markdown_folder_is_a_view_with_one_row_per_file(tmp_path: Path) -> None:
    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\nStaff get 30 days of annual leave.", encoding="utf-8")
    (docs / "travel.md").write_text("# Travel\nBook trains for trips under 600 km.", encoding="utf-8")
    (tmp_path / "secret.md").write_text("outside the folder", encoding="utf-8")
    config = ConnectionConfig(name="docs", kind="duckdb", files={"handbook": str(docs / "*.md")})

    async def read() -> list[tuple[object, ...]]:
        async with connector_for(config) as connector:
            schema = await connector.introspect("handbook")
            assert {"filename", "content"} <= set(schema.column_names)
            statement = sqlglot.parse_one("SELECT filename, content FROM handbook ORDER BY filename", read="duckdb")
            return (await connector.execute(statement, Limits())).rows

    rows = anyio.run(read)
    assert [Path(str(r[0])).name for r in rows] == ["leave.md", "travel.md"]
    assert "30 days" in str(rows[0][1])


def test_documents_are_named_by_their_path_relative_to_the_folder_not_the_servers(tmp_path: Path) -> None:
    docs = tmp_path / "hand book"
    (docs / "policies").mkdir(parents=True)
    (docs / "leave.md").write_text("# Leave", encoding="utf-8")
    (docs / "policies" / "travel.md").write_text("# Travel", encoding="utf-8")
    config = ConnectionConfig(
        name="docs", kind="duckdb", files={"pages": str(docs / "**" / "*.md"), "one": str(docs / "leave.md")}
    )

    async def read(view: str) -> list[object]:
        async with connector_for(config) as connector:
            statement = sqlglot.parse_one(f"SELECT filename FROM {view} ORDER BY filename", read="duckdb")
            return [r[0] for r in (await connector.execute(statement, Limits())).rows]

    assert anyio.run(read, "pages") == ["leave.md", "policies/travel.md"]
    assert anyio.run(read, "one") == ["leave.md"]
