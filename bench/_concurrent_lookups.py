"""Governed point lookups from N concurrent MCP clients over HTTP vs the same lookups on N raw threads.

The governed side is N MCP sessions on one ``serve --http`` process (:mod:`bench._http_load`); the raw
side is N threads, each with its own connection of the store's own driver. Both make the same number
of lookups with the same keys; each side's throughput is lookups over the wall time from a common
start to the last answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from bench._http_load import Call, CallOutcome, LoadRun, drive

__all__ = ["CLIENTS_MIN_RATIO", "ConcurrencyMeasurement", "measure_concurrency", "report_concurrency"]

#: Governed lookups/s over raw lookups/s at the largest N, the target of 32 clients.
CLIENTS_MIN_RATIO = 0.7


class RawRunner(Protocol):
    run: Callable[[str, list[Any]], list[tuple[Any, ...]]]
    close: Callable[[], None]


@dataclass
class ConcurrencyMeasurement:
    store: str
    clients: int
    governed: LoadRun
    raw: LoadRun

    @property
    def ratio(self) -> float:
        return self.governed.calls_per_s / self.raw.calls_per_s if self.raw.calls_per_s else 0.0


def raw_threads(
    make_raw: Callable[[], RawRunner], raw_sql: Callable[[int], tuple[str, list[Any]]], clients: int, calls: int
) -> LoadRun:
    """``clients`` threads with a connection each, started together, each running ``calls`` lookups."""
    run = LoadRun(clients=clients, wall_s=0.0)
    ready = threading.Barrier(clients + 1)
    lock = threading.Lock()
    errors: list[BaseException] = []
    last_answer = 0.0

    def worker(c: int) -> None:
        nonlocal last_answer
        raw = make_raw()
        try:
            ready.wait()
            for i in range(calls):
                sql, params = raw_sql(c * calls + i)
                sent = time.perf_counter()
                raw.run(sql, params)
                done = time.perf_counter()
                with lock:
                    run.outcomes.append(CallOutcome(c, "raw", "lookup", done - sent, False, False))
                    last_answer = max(last_answer, done)
        except BaseException as exc:  # reported below: a raw baseline that fails is no baseline
            errors.append(exc)
        finally:
            raw.close()

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"the raw baseline failed: {errors[0]!r}") from errors[0]
    run.wall_s = max(last_answer - began, 1e-9)
    return run


async def measure_concurrency(
    store: str,
    url: str,
    token: str,
    governed: Callable[[int], dict[str, Any]],
    make_raw: Callable[[], RawRunner],
    raw_sql: Callable[[int], tuple[str, list[Any]]],
    clients: int,
    calls: int,
) -> ConcurrencyMeasurement:
    """The same ``clients`` x ``calls`` lookups, governed over HTTP and then raw on threads."""

    def plan(c: int, i: int) -> Call:
        return Call("query_product", governed(c * calls + i), "lookup")

    governed_run = await drive(url, [token], clients, calls, plan)
    if governed_run.unintended:
        raise RuntimeError(f"{store}: a governed lookup failed: {governed_run.unintended[0].message}")
    raw_run = raw_threads(make_raw, raw_sql, clients, calls)
    return ConcurrencyMeasurement(store, clients, governed_run, raw_run)


def report_concurrency(results: list[ConcurrencyMeasurement], calls: int) -> bool:
    """Print the table; True when the largest N of every store meets the ratio target."""
    table = Table(
        title=f"concurrent point lookups: N MCP clients over streamable HTTP vs N raw threads, {calls} per client",
        caption=f"ratio: governed lookups/s over raw lookups/s; target ≥ {CLIENTS_MIN_RATIO:.1f}x at the largest N",
    )
    columns = ("store", "N", "MCP/s", "MCP p50", "MCP p99", "raw/s", "raw p50", "raw p99", "ratio", "")
    for column in columns:
        table.add_column(column, justify="left" if column == "store" else "right")
    largest = {m.store: max(r.clients for r in results if r.store == m.store) for m in results}
    all_met = True
    for m in results:
        verdict = ""
        if m.clients == largest[m.store]:
            met = m.ratio >= CLIENTS_MIN_RATIO
            all_met &= met
            verdict = "[green]met[/]" if met else "[red]missed[/]"
        table.add_row(
            m.store,
            str(m.clients),
            f"{m.governed.calls_per_s:.0f}",
            f"{m.governed.percentile_ms(0.5):.1f}",
            f"{m.governed.percentile_ms(0.99):.1f}",
            f"{m.raw.calls_per_s:.0f}",
            f"{m.raw.percentile_ms(0.5):.2f}",
            f"{m.raw.percentile_ms(0.99):.2f}",
            f"{m.ratio:.2f}x",
            verdict,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
    return all_met
