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
