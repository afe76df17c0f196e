"""The index progress bar of the CLI: one rich bar per product, fed by the index flow's callback."""

from __future__ import annotations

import io
import re

from rich.console import Console

from embeddings.index import IndexProgress
from servers.cli._progress import LineProgress, rich_progress


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


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_a_line_is_printed_at_least_every_30_seconds_of_embedding() -> None:
    out = io.StringIO()
    clock = _Clock()
    progress = LineProgress(Console(file=out, width=200, force_terminal=False), clock=clock)
    printed_at: list[float] = []
    progress(IndexProgress("bench.scifact", "reading", 0, 5183, 0, rows_read=5183))
    printed_at.append(clock.now)
    for batch in range(1, 601):  # one embedding batch every 1.7 s: 17 minutes
        clock.now += 1.7
        before = out.getvalue().count("\n")
        progress(IndexProgress("bench.scifact", "embedding", batch * 8, 5183, batch * 64, rows_read=5183))
        if out.getvalue().count("\n") > before:
            printed_at.append(clock.now)
    gaps = [b - a for a, b in zip(printed_at, printed_at[1:], strict=False)]
    assert gaps and max(gaps) <= 30
    assert len(printed_at) < 100  # a line per interval, not per batch
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("bench.scifact: reading · 0/5,183 rows (0%) · 5,183 read")
    assert "embedding · " in lines[-1] and "rows/s, about " in lines[-1] and " left" in lines[-1]


def test_without_a_terminal_every_phase_change_prints_at_once() -> None:
    out = io.StringIO()
    clock = _Clock()
    progress = LineProgress(Console(file=out, width=200, force_terminal=False), clock=clock)
    for phase in ("reading", "embedding", "writing", "done"):
        progress(IndexProgress("support.notes", phase, 5, 5, 7, rows_read=5))  # no time passes
    assert [line.split(" · ")[0] for line in out.getvalue().splitlines()] == [
        "support.notes: reading",
        "support.notes: embedding",
        "support.notes: writing",
        "support.notes: done",
    ]


def test_the_bar_follows_embedded_rows_not_rows_read() -> None:
    out = io.StringIO()
    with rich_progress(Console(file=out, width=200, force_terminal=True)) as progress:
        progress(IndexProgress("support.notes", "reading", 0, 40, 0, rows_read=40))
        progress(IndexProgress("support.notes", "embedding", 10, 40, 64, rows_read=40))
    last = re.findall(r"(\d+)/40", out.getvalue())[-1]  # the bar as left on exit
    assert last == "10"
    assert "40 read" in out.getvalue()
