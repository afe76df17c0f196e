"""N concurrent MCP clients over streamable HTTP against one served deployment, and what they saw.

:func:`served_over_http` runs ``serve --http`` (:func:`servers.http.serve_http`) in a child process on a
free loopback port, so the server's CPU and memory are its own and not the clients'; :func:`drive`
connects N clients (one MCP session and one HTTP connection pool each), starts them together and
times every call. Shared by ``bench/query_overhead.py --clients``, ``bench/load.py`` and the load
tests.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from servers.http import serve_http
from servers.settings import Settings

__all__ = ["Call", "CallOutcome", "LoadRun", "Served", "drive", "http_client", "rss_bytes", "served_over_http"]


@dataclass(frozen=True)
class Served:
    """A server running in a child process: where to reach it and which process it is."""

    url: str
    pid: int


@dataclass(frozen=True)
class Call:
    """One tool call a client makes; ``expect_error`` marks a refusal the load asks for on purpose."""

    tool: str
    arguments: dict[str, Any]
    kind: str
    expect_error: bool = False


@dataclass(frozen=True)
class CallOutcome:
    client: int
    tool: str
    kind: str
    seconds: float
    is_error: bool
    expect_error: bool
    message: str = ""

    @property
    def unintended(self) -> bool:
        return self.is_error != self.expect_error


@dataclass
class LoadRun:
    """Every call of one run and the wall time from the start signal to the last answer."""

    clients: int
    wall_s: float
    outcomes: list[CallOutcome] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return len(self.outcomes) / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile([o.seconds for o in self.outcomes], q) * 1000

    @property
    def unintended(self) -> list[CallOutcome]:
        return [o for o in self.outcomes if o.unintended]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(max(int(q * 1000) - 1, 0), 998)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served_over_http(settings: Settings, *, start_timeout_s: float = 120) -> Iterator[Served]:
    """``settings`` served over streamable HTTP on 127.0.0.1 by a child process, stopped (SIGTERM) on exit.

    Raises:
        RuntimeError: the server did not come up (its process died or never listened).
    """
    port = free_port()
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": "127.0.0.1", "port": port})}
    )
    process = multiprocessing.get_context("spawn").Process(target=serve_http, args=(settings,), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _listening(port):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start (exit code {process.exitcode})")
            time.sleep(0.05)
        assert process.pid is not None
        yield Served(url=f"http://127.0.0.1:{port}{settings.server.path}", pid=process.pid)
    finally:
        process.terminate()  # uvicorn shuts down gracefully: the lifespan drains the audit writer
        process.join(60)
        if process.is_alive():
            process.kill()
            process.join(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@asynccontextmanager
async def http_client(url: str, token: str, *, timeout_s: float = 300) -> AsyncIterator[Client]:
    """An MCP client session over streamable HTTP with a bearer token."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s) as transport,
        Client(streamable_http_client(url, http_client=transport)) as client,
    ):
        yield client


async def drive(
    url: str,
    tokens: list[str],
    clients: int,
    calls_per_client: int,
    plan: Callable[[int, int], Call],
) -> LoadRun:
    """``clients`` sessions (client ``c`` uses ``tokens[c % len(tokens)]``), each making the calls
    ``plan(c, 0..calls_per_client-1)`` one after another; all start together once every one is connected.
    """
    start = anyio.Event()
    last_answer = 0.0
    connected = 0
    all_connected = anyio.Event()
    run = LoadRun(clients=clients, wall_s=0.0)

    async def client_loop(c: int) -> None:
        nonlocal connected, last_answer
        async with http_client(url, tokens[c % len(tokens)]) as client:
            connected += 1
            if connected == clients:
                all_connected.set()
            await start.wait()
            for i in range(calls_per_client):
                call = plan(c, i)
                sent = time.perf_counter()
                result = await client.call_tool(call.tool, call.arguments)
                last_answer = time.perf_counter()
                seconds = last_answer - sent
                message = " ".join(getattr(part, "text", "") for part in result.content) if result.is_error else ""
                run.outcomes.append(
                    CallOutcome(c, call.tool, call.kind, seconds, bool(result.is_error), call.expect_error, message)
                )

    async with anyio.create_task_group() as group:
        for c in range(clients):
            group.start_soon(client_loop, c)
        await all_connected.wait()
        began = time.perf_counter()
        start.set()
    run.wall_s = max(last_answer - began, 1e-9)  # to the last answer: closing the sessions is not load
    return run
