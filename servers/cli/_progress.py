"""Index progress on the terminal: one rich bar per product (rows done of total, rate, ETA, chunks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from embeddings.index import IndexProgress, ProgressCallback

__all__ = ["rich_progress"]


class _RateColumn(ProgressColumn):
    """Rows per second of the task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "… rows/s", style="progress.data.speed")


@contextmanager
def rich_progress(console: Console | None = None, *, transient: bool = False) -> Iterator[ProgressCallback]:
    """A progress callback drawing one rich bar per product: rows done of total, rate, ETA, chunks embedded."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[phase]} · {task.fields[chunks]:,} chunks embedded"),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=transient) as bar:

        def update(event: IndexProgress) -> None:
            task = tasks.get(event.product)
            if task is None:
                task = tasks[event.product] = bar.add_task(event.product, total=event.rows_total, phase="", chunks=0)
            bar.update(
                task,
                completed=event.rows_done,
                total=event.rows_total,
                phase=event.phase,
                chunks=event.chunks_embedded,
            )
            if event.phase == "done":
                bar.update(task, completed=event.rows_total or event.rows_done)

        yield update
