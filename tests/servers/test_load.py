"""The server under load: many MCP clients over streamable HTTP on loopback at once, mixed calls.

One ``serve --http`` process (a child, as deployed) serves the demo workspace; 50 clients start
together and each makes one call of every kind (lookups, aggregates, run_sql, catalog search,
refusals). Every call must have exactly one audit row saying who called what and how it ended, no
call may fail unless it was meant to, and the server's memory must not keep growing from one wave
of clients to the next. No timing is asserted: ``bench/load.py`` measures speed.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from bench._http_load import LoadRun, drive, rss_bytes, served_over_http
from bench._load_mix import LOAD_PRINCIPALS, mixed_call, with_load_principals
from catalog.audit import AuditLog
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.settings import Settings

pytestmark = pytest.mark.anyio

CLIENTS = 50
CALLS = 6  # one of each kind per client: the kinds cycle with the client number
WARM_CALLS = 2  # the warm-up wave: 50 sessions opened and closed, every kind called by some client
MB = 1024 * 1024
_waves = itertools.count()


def expected_rows(run: LoadRun, names: list[str]) -> Counter[tuple[str, str, bool]]:
    """(principal, tool, answered) of every call, as its audit row must say."""
    return Counter((names[o.client % len(names)], o.tool, not o.is_error) for o in run.outcomes)


def audited_rows(settings: Settings, names: list[str]) -> Counter[tuple[str, str, bool]]:
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        log = AuditLog.from_registry(registry)
        rows = [row for name in names for row in log.query(principal=name, limit=100_000)]
    return Counter((row.principal, row.tool, row.outcome == "ok") for row in rows)


async def test_fifty_concurrent_clients_get_their_answers_and_every_call_one_audit_row(
    settings: Settings, demo: DemoWorkspace
) -> None:
    load = with_load_principals(settings, suffix=f"-{next(_waves)}")
    with served_over_http(load.settings) as served:
        warm = await drive(served.url, load.tokens, CLIENTS, WARM_CALLS, mixed_call)
        rss_warm = rss_bytes(served.pid)
        wave = await drive(served.url, load.tokens, CLIENTS, CALLS, mixed_call)
        rss_after = rss_bytes(served.pid)
    # the server has stopped: every row it acknowledged must be in the registry
    assert (len(warm.outcomes), len(wave.outcomes)) == (CLIENTS * WARM_CALLS, CLIENTS * CALLS)
    for run in (warm, wave):
        assert [(o.kind, o.message) for o in run.unintended] == []
    assert {o.kind for o in wave.outcomes} == {"lookup", "aggregate", "run_sql", "search", "refusal"}
    assert sum(o.is_error for o in wave.outcomes) > 0 and sum(not o.is_error for o in wave.outcomes) > 0
    assert audited_rows(load.settings, load.names) == expected_rows(warm, load.names) + expected_rows(wave, load.names)
    assert rss_after - rss_warm < 64 * MB, f"server RSS grew {(rss_after - rss_warm) / MB:.0f} MB in a second wave"


def test_the_load_principals_cover_a_reader_a_masked_analyst_and_a_principal_without_roles() -> None:
    assert sorted(map(tuple, LOAD_PRINCIPALS.values())) == [
        (),
        ("analyst", "pii-reader", "sales"),
        ("analyst", "sales-eu"),
    ]
