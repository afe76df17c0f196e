"""Audit statistics counted by the registry's database (SQLite and PostgreSQL), and ``audit --stats``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from typer.testing import CliRunner

from catalog.audit import AuditLog, AuditRecord, digest_args
from catalog.audit_stats import audit_stats
from catalog.registry import Registry
from servers.cli import app

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def log(registry_url: str) -> Iterator[AuditLog]:
    with Registry.from_url(registry_url) as registry:
        log = AuditLog(registry)
        for row in _rows():
            log.record(row)
        yield log
        log.close()


def record(ago: timedelta, **overrides: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "time": NOW - ago,
        "principal": "ana",
        "tool": "query_product",
        "product": "shop.orders",
        "args_digest": digest_args({}),
        "rows": 10,
        "latency_ms": 10.0,
        "outcome": "ok",
    }
    return AuditRecord.model_validate({**values, **overrides})


def _rows() -> list[AuditRecord]:
    hour = timedelta(hours=1)
    return [
        record(hour, rows=10, latency_ms=10.0),
        record(2 * hour, rows=30, latency_ms=30.0),
        record(3 * hour, rows=None, latency_ms=5.0, outcome="denied", error_code="access_denied"),
        record(hour, principal="sam", tool="run_sql", product="shop.orders,shop.customers", rows=4, latency_ms=8.0),
        record(hour, principal="sam", tool="describe_product", product=None, rows=None, latency_ms=2.0),
        record(30 * hour, rows=999, latency_ms=99.0),  # outside a 24h window
    ]


def test_calls_are_grouped_per_principal_product_tool_and_outcome_within_the_window(log: AuditLog) -> None:
    stats = audit_stats(log, since=NOW - timedelta(hours=24))
    groups = {(s.principal, s.product, s.tool, s.outcome): s for s in stats}
    assert set(groups) == {
        ("ana", "shop.orders", "query_product", "ok"),
        ("ana", "shop.orders", "query_product", "denied"),
        ("sam", "shop.orders,shop.customers", "run_sql", "ok"),
        ("sam", None, "describe_product", "ok"),
    }
    ok = groups["ana", "shop.orders", "query_product", "ok"]
    assert (ok.calls, ok.rows, ok.avg_ms, ok.max_ms) == (2, 40, 20.0, 30.0)
    assert ok.first == NOW - timedelta(hours=2) and ok.last == NOW - timedelta(hours=1)
    assert groups["ana", "shop.orders", "query_product", "denied"].rows == 0  # no rows: counted as none
    assert stats[0] == ok  # most calls first


def test_a_longer_window_and_filters_narrow_or_widen_the_groups(log: AuditLog) -> None:
    week = audit_stats(log, since=NOW - timedelta(days=7), principal="ana", outcome="ok")
    assert [(s.calls, s.rows) for s in week] == [(3, 1039)]
    assert audit_stats(log, since=NOW - timedelta(hours=24), tool="nope") == []


def test_the_database_groups_the_rows_in_one_statement(log: AuditLog) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(log.engine, "before_cursor_execute", seen)
    try:
        audit_stats(log, since=NOW - timedelta(hours=24))
    finally:
        event.remove(log.engine, "before_cursor_execute", seen)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "GROUP BY" in selects[0].upper() and "count(" in selects[0].lower()


def test_a_naive_or_empty_window_is_refused_with_what_would_be_valid(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        audit_stats(log, since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="must be after since"):
        audit_stats(log, since=NOW, until=NOW)


def _cli(tmp_path: Path, registry_url: str, *args: str) -> tuple[int, str]:
    config = tmp_path / "dataproducts.yaml"
    config.write_text(f"registry_url: {json.dumps(registry_url)}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(config), "audit", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_audit_stats_prints_json_for_the_default_24h_window(log: AuditLog, registry_url: str, tmp_path: Path) -> None:
    code, output = _cli(tmp_path, registry_url, "--stats", "--json")
    assert code == 0, output
    document = json.loads(output)
    assert document["calls"] == 5
    assert {(g["principal"], g["tool"], g["outcome"], g["calls"]) for g in document["groups"]} == {
        ("ana", "query_product", "ok", 2),
        ("ana", "query_product", "denied", 1),
        ("sam", "run_sql", "ok", 1),
        ("sam", "describe_product", "ok", 1),
    }
    code, output = _cli(tmp_path, registry_url, "--stats", "--since", "7d", "--principal", "ana", "--json")
    assert code == 0 and json.loads(output)["calls"] == 4


def test_audit_stats_prints_a_table(log: AuditLog, registry_url: str, tmp_path: Path) -> None:
    code, output = _cli(tmp_path, registry_url, "--stats", "--since", "24h")
    assert code == 0, output
    assert "calls in the last 24h" in output and "5 calls in 4 groups" in output
    line = next(line for line in output.splitlines() if "describe_product" in line)
    assert "sam" in line and " 1 " in line


def test_a_bad_window_is_refused_naming_the_option(log: AuditLog, registry_url: str, tmp_path: Path) -> None:
    code, output = _cli(tmp_path, registry_url, "--stats", "--since", "yesterday")
    assert code == 2
    assert "--since" in output and "30s, 15m, 24h, 1d, 2w" in output
