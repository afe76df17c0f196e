from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from catalog.audit import AuditLog, AuditRecord, digest_args
from catalog.errors import AuditError
from catalog.registry import Registry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = f"sqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with Registry.from_url(str(url)) as registry:
        yield registry


@pytest.fixture
def log(registry: Registry) -> AuditLog:
    return AuditLog(registry)


def record(**overrides: object) -> AuditRecord:
    values: dict[str, object] = {
        "time": T0,
        "principal": "alice",
        "tool": "query_product",
        "product": "sales.orders",
        "args_digest": digest_args({"product": "sales.orders"}),
        "rows": 10,
        "bytes": 420,
        "latency_ms": 12.5,
        "outcome": "ok",
    }
    return AuditRecord.model_validate({**values, **overrides})


def test_the_args_digest_is_the_sha256_of_canonical_json_whatever_the_key_order() -> None:
    assert digest_args({"b": 1, "a": [1, "x"]}) == digest_args({"a": [1, "x"], "b": 1})
    assert digest_args({"a": 1}) != digest_args({"a": 2})
    assert digest_args({}) == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_a_recorded_call_reads_back_exactly(log: AuditLog) -> None:
    rec = record(error_code=None)
    log.record(rec)
    [back] = log.query()
    assert back.model_dump(exclude={"id"}) == rec.model_dump(exclude={"id"})
    assert back.id is not None
    assert back.time.tzinfo is not None and back.time.utcoffset() == timedelta(0)


def test_records_come_back_newest_first_and_filtered(log: AuditLog) -> None:
    log.record(record(time=T0))
    log.record(record(time=T0 + timedelta(minutes=1), principal="bob", outcome="denied", error_code="access_denied"))
    log.record(record(time=T0 + timedelta(minutes=2), tool="run_sql", product=None, rows=None, bytes=None))
    log.record(record(time=T0 + timedelta(minutes=3), outcome="error", error_code="timeout"))
    assert [r.time for r in log.query()] == [T0 + timedelta(minutes=m) for m in (3, 2, 1, 0)]
    assert [r.principal for r in log.query(principal="bob")] == ["bob"]
    assert [r.tool for r in log.query(tool="run_sql")] == ["run_sql"]
    assert len(log.query(product="sales.orders")) == 3
    assert [r.error_code for r in log.query(outcome="error")] == ["timeout"]
    assert len(log.query(since=T0 + timedelta(minutes=2))) == 2
    assert len(log.query(limit=1)) == 1
    assert log.query(principal="bob", outcome="ok") == []


def test_a_since_in_another_time_zone_means_the_same_instant(log: AuditLog) -> None:
    log.record(record(time=T0))
    berlin = timezone(timedelta(hours=1))
    assert len(log.query(since=T0.astimezone(berlin))) == 1
    assert log.query(since=(T0 + timedelta(seconds=1)).astimezone(berlin)) == []


def test_naive_times_and_bad_limits_are_refused(log: AuditLog) -> None:
    with pytest.raises(ValidationError):
        record(time=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        log.query(since=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="at least 1"):
        log.query(limit=0)


def test_a_record_that_cannot_be_written_raises_audit_error(registry: Registry, log: AuditLog) -> None:
    with registry.engine.begin() as conn:
        conn.execute(text("DROP TABLE dp_audit"))
    with pytest.raises(AuditError) as info:
        log.record(record())
    assert info.value.code == "audit_failed"
    assert info.value.__cause__ is not None
    with pytest.raises(AuditError):
        log.query()


def test_an_audit_log_opened_by_url_shares_the_registry_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with AuditLog.from_url(url) as log:
        log.record(record())
    with Registry.from_url(url) as registry:
        assert [r.principal for r in AuditLog.from_registry(registry).query()] == ["alice"]


def test_the_objects_a_statement_touched_read_back_as_written(log: AuditLog) -> None:
    log.record(record(objects=["main.orders", "main.customers"]))
    log.record(record(time=T0 + timedelta(minutes=1), objects=None))
    assert [r.objects for r in log.query()] == [None, ["main.orders", "main.customers"]]


@pytest.mark.parametrize("reopen", ["registry", "audit_log"])
def test_opening_a_registry_from_before_objects_adds_the_column_and_keeps_its_rows(
    registry: Registry, reopen: str
) -> None:
    url = registry.engine.url.render_as_string(hide_password=False)
    AuditLog(registry).record(record())
    with registry.engine.begin() as conn:
        conn.execute(text("ALTER TABLE dp_audit DROP COLUMN objects"))
    opened = Registry.from_url(url) if reopen == "registry" else AuditLog.from_url(url)
    try:
        log = AuditLog(opened.engine)
        log.record(record(time=T0 + timedelta(minutes=1), objects=["orders"]))
        assert [r.objects for r in log.query()] == [["orders"], None]
    finally:
        opened.close()
    with Registry.from_url(url) as again:  # upgrading twice changes nothing
        assert len(AuditLog(again).query()) == 2


def test_a_failed_write_names_the_driver_reason_but_not_the_statement_or_its_values(
    registry: Registry, log: AuditLog
) -> None:
    with registry.engine.begin() as conn:
        conn.execute(text("DROP TABLE dp_audit"))
    with pytest.raises(AuditError) as info:
        log.record(record(principal="alice-secret-marker"))
    message = info.value.message
    assert "INSERT" not in message and "parameters" not in message and "\n" not in message
    assert message.count("alice-secret-marker") == 1  # the principal, once, not the echoed values


def test_arguments_too_deeply_nested_to_serialise_still_have_a_digest() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert len(digest_args({"where": deep})) == 64


def test_names_as_a_caller_asked_them_are_clipped_to_their_columns(log: AuditLog) -> None:
    log.record(record(tool="t" * 500, product="p" * 500))
    [back] = log.query()
    assert len(back.tool) == 100 and back.tool.endswith("…")
    assert back.product is not None and len(back.product) == 200


def test_concurrent_calls_all_return_with_their_rows_committed(registry: Registry, log: AuditLog) -> None:
    def call(i: int) -> bool:
        log.record(record(principal=f"p{i}", time=T0 + timedelta(seconds=i)))
        with registry.engine.connect() as conn:  # another connection sees it: committed, not just queued
            return (
                conn.execute(text("SELECT count(*) FROM dp_audit WHERE principal = :p"), {"p": f"p{i}"}).scalar() == 1
            )

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(call, range(64)))
    back = log.query(limit=1000)
    assert sorted(r.principal for r in back) == sorted(f"p{i}" for i in range(64))
    assert len({r.id for r in back}) == 64


def test_when_the_table_is_gone_every_concurrent_call_fails_closed(registry: Registry, log: AuditLog) -> None:
    log.record(record())
    with registry.engine.begin() as conn:
        conn.execute(text("DROP TABLE dp_audit"))
    futures = [log.submit(record(principal=f"q{i}")) for i in range(8)]
    for i, future in enumerate(futures):
        with pytest.raises(AuditError, match=f"audit record of query_product by q{i} .*nothing was served"):
            future.result(60)


def test_rows_queued_while_another_writer_holds_the_sqlite_lock_commit_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.from_url(url) as registry:
        log = AuditLog(registry)
        holder = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction: the audit writer waits
        first = log.submit(record(principal="first"))
        queued = [log.submit(record(principal=f"w{i}")) for i in range(10)]
        assert not first.done() and not any(f.done() for f in queued)  # nobody returns before its commit
        holder.execute("COMMIT")
        holder.close()
        for future in [first, *queued]:
            future.result(60)
        assert len(log.query(limit=100)) == 11
        assert log.transactions <= 2  # the ten rows that waited went in one transaction


def test_a_row_a_leader_committed_is_readable_from_another_connection_once_it_returns(
    registry: Registry, log: AuditLog
) -> None:
    def call(i: int) -> bool:
        done = log.lead(record(principal=f"l{i}", time=T0 + timedelta(seconds=i)))
        done.result(30)  # resolved already when this thread led; else once the writer thread committed it
        other = create_engine(registry.engine.url, poolclass=NullPool)  # not the pool the log writes through
        try:
            with other.connect() as conn:
                return (
                    conn.execute(text("SELECT count(*) FROM dp_audit WHERE principal = :p"), {"p": f"l{i}"}).scalar()
                    == 1
                )
        finally:
            other.dispose()

    assert call(-1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(call, range(24)))
    assert len(log.query(limit=100)) == 25


def test_the_kept_connection_writes_again_after_a_batch_the_database_refused(registry: Registry, log: AuditLog) -> None:
    log.record(record(principal="before"))
    with registry.engine.begin() as conn:
        conn.execute(text("ALTER TABLE dp_audit RENAME TO dp_audit_away"))
    with pytest.raises(AuditError):
        log.lead(record(principal="refused")).result(10)
    with registry.engine.begin() as conn:
        conn.execute(text("ALTER TABLE dp_audit_away RENAME TO dp_audit"))
    assert log.lead(record(principal="after")).result(10) is None
    assert [r.principal for r in log.query()] == ["after", "before"]
    log.close()
