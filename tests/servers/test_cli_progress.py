"""The index progress bar of the CLI: one rich bar per product, fed by the index flow's callback."""

from __future__ import annotations

import io

from rich.console import Console

from embeddings.index import IndexProgress
from servers.cli._progress import rich_progress


def test_rich_progress_draws_rows_rate_and_chunks() -> None:
    out = io.StringIO()
    events = [
        IndexProgress("support.notes", "reading", 5, 5, 0),
        IndexProgress("support.notes", "embedding", 5, 5, 7),
        IndexProgress("support.notes", "writing", 5, 5, 7),
        IndexProgress("support.notes", "done", 5, 5, 7),
    ]
    with rich_progress(Console(file=out, width=200, force_terminal=False)) as progress:
        for event in events:
            progress(event)
    text = out.getvalue()
    assert "support.notes" in text and "5/5" in text and "chunks embedded" in text
