"""The refresher: full and incremental runs, deletes, masks at rest, drift, and a run killed mid-way."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import anyio
import duckdb
import pytest
from pydantic import ValidationError

from catalog.compiler import Compiler
from catalog.errors import ContractError, InvalidRequestError
from catalog.registry import Registry
from catalog.replica_log import ReplicaLog
from connectors import ConnectionConfig, _replica_file, connector_for
from connectors.replica_sync import replica_folder, sync_replica
from tests.connectors import replica_fixtures as shop

ROOT = Path(__file__).resolve().parents[2]


def _rows(start: int, stop: int, day: int = 1) -> list[tuple[object, ...]]:
    return [
        (i, f"buyer{i}@example.org", "EU" if i % 2 else "US", Decimal(i) / 4, datetime(2026, 1, day, 10, i % 60))
        for i in range(start, stop)
    ]


def _setup(tmp_path: Path, rows: list[tuple[object, ...]]) -> tuple[Path, ReplicaLog]:
    db = tmp_path / "shop.db"
    shop.create(shop.engine(db), rows)
    return db, ReplicaLog(Registry.from_url(str(tmp_path / "registry.db")))


def _sync(db: Path, log: ReplicaLog, root: Path, contract: object, **kw: object):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        source = connector_for(ConnectionConfig(name="shop", kind="sqlite", path=str(db)))
        try:
            return await sync_replica(contract, source, Compiler(source.dialect, "salt"), log, root, **kw)  # type: ignore[arg-type]
        finally:
            await source.aclose()

    return anyio.run(run)


def _replica(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_a_full_sync_copies_every_row_and_records_the_run(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 250))
    report = _sync(db, log, tmp_path / "replicas", shop.contract(), page_rows=100)
    assert (report.mode, report.rows, report.changed) == ("full", 250, 250)
    assert _replica(report.path, "SELECT count(*), sum(amount) FROM replica") == [(250, Decimal(sum(range(250))) / 4)]
    current = log.current("shop.orders")
    assert current is not None and current.path == str(report.path) and current.rows == 250
    assert current.as_of == report.as_of and current.duration_ms > 0


def test_an_incremental_sync_upserts_changed_rows_and_compares_keys_every_nth_run(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 100))
    contract = shop.contract(refresh="incremental", cursor="updated_at", deletes={"full_compare_every": 2})
    root = tmp_path / "replicas"
    first = _sync(db, log, root, contract, page_rows=30)
    with shop.engine(db).begin() as conn:
        conn.exec_driver_sql("UPDATE orders SET amount = 0, updated_at = '2026-01-02 00:00:00' WHERE order_id < 5")
        shop.insert(conn, _rows(100, 110, day=2))
        conn.exec_driver_sql("DELETE FROM orders WHERE order_id BETWEEN 50 AND 52")
    second = _sync(db, log, root, contract, page_rows=30)
    assert second.mode == "incremental" and second.deleted == 0
    assert _replica(second.path, "SELECT count(*) FROM replica") == [(110,)]  # deletes unseen until the compare
    assert _replica(second.path, "SELECT sum(amount) FROM replica WHERE order_id < 5") == [(Decimal(0),)]
    third = _sync(db, log, root, contract, page_rows=30)
    assert (third.mode, third.deleted, third.rows) == ("incremental", 3, 107)
    assert third.changed == 0  # only rows past the watermark are read again
    assert first.path.exists() is False  # generations older than the previous one are removed
    assert log.current("shop.orders").watermark == "2026-01-02T10:49:00"  # type: ignore[union-attr]


def test_a_masked_at_rest_replica_holds_no_raw_value_of_a_masked_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB compresses strings (FSST, dictionaries): stored uncompressed, raw bytes would show in a scan
    monkeypatch.setitem(_replica_file._CONFIG, "force_compression", "uncompressed")
    db, log = _setup(tmp_path, _rows(0, 300))
    contract = shop.contract(
        refresh="incremental", cursor="updated_at", deletes={"full_compare_every": 1}, masked_at_rest=True
    )
    root = tmp_path / "replicas"
    _sync(db, log, root, contract)
    with shop.engine(db).begin() as conn:
        shop.insert(conn, _rows(300, 320, day=3))
    report = _sync(db, log, root, contract)
    files = list(replica_folder(root, "shop.orders").iterdir())
    assert files
    for path in files:
        data = path.read_bytes()
        assert b"@example.org" not in data and b"buyer1" not in data, path
    (masked,) = _replica(report.path, "SELECT customer_email FROM replica WHERE order_id = 7")[0]
    assert isinstance(masked, str) and len(masked) == 32  # the hash mask's hex digest
    plain = _sync(db, log, tmp_path / "plain", shop.contract(), full=True)
    assert b"@example.org" in plain.path.read_bytes()  # the control: the scan sees raw values when stored


def test_schema_drift_stops_the_sync_and_keeps_the_replica(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 10))
    root = tmp_path / "replicas"
    before = _sync(db, log, root, shop.contract())
    with shop.engine(db).begin() as conn:
        conn.exec_driver_sql("ALTER TABLE orders RENAME COLUMN region TO area")
    with pytest.raises(ContractError, match="column 'region' is not in source table 'orders'"):
        _sync(db, log, root, shop.contract())
    assert log.current("shop.orders").path == str(before.path)  # type: ignore[union-attr]
    failed = log.history("shop.orders")[0]
    assert failed.status == "failed" and "column 'region' is not in source table" in (failed.message or "")


@pytest.mark.parametrize(
    ("replica", "message"),
    [
        ({"refresh": "incremental", "deletes": {"full_compare_every": 3}}, "incremental refresh needs a cursor"),
        ({"refresh": "incremental", "cursor": "nope", "deletes": {"full_compare_every": 3}}, "unknown column 'nope'"),
        ({"refresh": "incremental", "cursor": "updated_at"}, "cannot see deleted rows by itself"),
        ({"max_lag": "5 minutes"}, "invalid duration '5 minutes'"),
        ({"refresh": "incremental", "cursor": "updated_at", "deletes": {}}, "set exactly one of"),
        ({"cursor": "updated_at"}, "belong to refresh: incremental"),
        (
            {
                "refresh": "incremental",
                "cursor": "customer_email",
                "masked_at_rest": True,
                "deletes": {"full_compare_every": 1},
            },
            "masked at rest and cannot serve as the refresh cursor",
        ),
    ],
)
def test_a_replica_section_that_cannot_work_is_refused_with_what_would(
    replica: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        shop.contract(**replica)


_CHILD = """
import sys, time, anyio
from pathlib import Path
from catalog.compiler import Compiler
from catalog.registry import Registry
from catalog.replica_log import ReplicaLog
from connectors import ConnectionConfig, connector_for
from connectors.replica_sync import sync_replica
from tests.connectors import replica_fixtures as shop

tmp = Path(sys.argv[1])

def stall(progress):
    (tmp / "reading").touch()
    time.sleep(60)  # killed here, mid-run

async def main():
    source = connector_for(ConnectionConfig(name="shop", kind="sqlite", path=str(tmp / "shop.db")))
    log = ReplicaLog(Registry.from_url(str(tmp / "registry.db")))
    await sync_replica(shop.contract(), source, Compiler(source.dialect, "salt"), log, tmp / "replicas",
                       page_rows=50, progress=stall, full=True)

anyio.run(main)
"""


def test_a_sync_killed_mid_run_leaves_the_previous_replica_serving_and_the_next_run_completes(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 200))
    root = tmp_path / "replicas"
    before = _sync(db, log, root, shop.contract())
    with shop.engine(db).begin() as conn:
        shop.insert(conn, _rows(200, 300, day=2))
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "reading").exists():
            assert child.poll() is None, "the child sync ended before it was killed"
            assert time.monotonic() < deadline, "the child sync never started reading"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    folder = replica_folder(root, "shop.orders")
    assert any(p.name.endswith(".partial") for p in folder.iterdir())  # the half-written generation
    current = log.current("shop.orders")
    assert current is not None and current.path == str(before.path)
    assert _replica(before.path, "SELECT count(*) FROM replica") == [(200,)]  # readers still get the old state
    after = _sync(db, log, root, shop.contract())
    assert after.rows == 300
    assert not any(p.name.endswith(".partial") for p in folder.iterdir())


def test_a_soft_delete_column_travels_with_the_upsert_and_needs_no_key_comparison(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 20))
    contract = shop.contract(refresh="incremental", cursor="updated_at", deletes={"soft_delete_column": "region"})
    root = tmp_path / "replicas"
    _sync(db, log, root, contract)
    with shop.engine(db).begin() as conn:  # the source marks rows instead of deleting them
        conn.exec_driver_sql("UPDATE orders SET region = 'GONE', updated_at = '2026-01-05 00:00:00' WHERE order_id < 3")
    report = _sync(db, log, root, contract)
    assert (report.mode, report.changed, report.deleted, report.rows) == ("incremental", 3, 0, 20)
    assert _replica(report.path, "SELECT count(*) FROM replica WHERE region = 'GONE'") == [(3,)]


def test_a_second_sync_of_the_same_product_is_refused_while_one_runs(tmp_path: Path) -> None:
    db, log = _setup(tmp_path, _rows(0, 5))
    root = tmp_path / "replicas"
    _sync(db, log, root, shop.contract())
    with open(replica_folder(root, "shop.orders") / ".lock", "a+", encoding="utf-8") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sync holds it
        with pytest.raises(InvalidRequestError, match="a sync of shop.orders is already running"):
            _sync(db, log, root, shop.contract())
    assert _sync(db, log, root, shop.contract()).rows == 5  # released: the next run goes ahead
