"""Index progress: one rich bar per product on a terminal, a line at least every half minute otherwise.

Both follow the slow step: rows count as done once their chunks are embedded (``IndexProgress.rows_done``),
not when they are read, so the rate and the time left are the embedding's. Without a terminal (a log, a CI
job, a pipe) rich draws nothing until the end, so :class:`LineProgress` prints one plain line per product
when its phase changes and otherwise at most every :data:`LINE_EVERY_S` seconds: the index flow reports
after every embedding batch (64 chunks, seconds on a laptop), so a line appears well within 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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

__all__ = ["LINE_EVERY_S", "LineProgress", "rich_progress"]

#: Seconds between two progress lines of one product when no terminal shows a bar.
LINE_EVERY_S = 15.0


class _RateColumn(ProgressColumn):
    """Rows per second of the task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "… rows/s", style="progress.data.speed")


class LineProgress:
    """A progress callback printing plain lines: on each phase change, else at most every ``every_s``.

    ``clock`` (seconds, monotonic) is injectable so that tests control time.
    """

    def __init__(
        self, console: Console, *, every_s: float = LINE_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, tuple[float, str]] = {}  # product -> (printed at, phase)
        self._started: dict[str, tuple[float, int]] = {}  # product -> (first event at, rows done then)

    def __call__(self, event: IndexProgress) -> None:
        now = self.clock()
        started = self._started.setdefault(event.product, (now, event.rows_done))
        last = self._last.get(event.product)
        if last is not None and last[1] == event.phase and now - last[0] < self.every_s:
            return
        self._last[event.product] = (now, event.phase)
        self.console.print(_line(event, now - started[0], event.rows_done - started[1]), highlight=False)


def _line(event: IndexProgress, elapsed_s: float, rows_since: int) -> str:
    total = event.rows_total
    done = f"{event.rows_done:,}/{total:,} rows" if total else f"{event.rows_done:,} rows"
    if total:
        done += f" ({event.rows_done / total:.0%})"
    parts = [
        f"{event.product}: {event.phase}",
        done,
        f"{event.rows_read:,} read",
        f"{event.chunks_embedded:,} chunks embedded",
    ]
    if event.phase == "embedding" and total and rows_since > 0 and elapsed_s > 0:
        rate = rows_since / elapsed_s
        parts.append(f"{rate:,.1f} rows/s, about {_duration((total - event.rows_done) / rate)} left")
    parts.append(f"{_duration(elapsed_s)} elapsed")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def rich_progress(console: Console | None = None, *, transient: bool = False) -> Iterator[ProgressCallback]:
    """A progress callback: one rich bar per product on a terminal (rows embedded of total, rate, ETA,
    chunks embedded), :class:`LineProgress` lines when ``console`` is not a terminal."""
    if console is not None and not console.is_terminal:
        yield LineProgress(console)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[phase]} · {task.fields[read]:,} read · {task.fields[chunks]:,} chunks embedded"),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=transient) as bar:

        def update(event: IndexProgress) -> None:
            task = tasks.get(event.product)
            if task is None:
                task = tasks[event.product] = bar.add_task(
                    event.product, total=event.rows_total, phase="", chunks=0, read=0
                )
            bar.update(
                task,
                completed=event.rows_done,
                total=event.rows_total,
                phase=event.phase,
                chunks=event.chunks_embedded,
                read=event.rows_read,
            )
            if event.phase == "done":
                bar.update(task, completed=event.rows_total or event.rows_done)

        yield update
