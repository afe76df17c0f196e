"""The refresher: bring a product's analytical replica (a DuckDB file) in step with its source.

:func:`sync_replica` reads the source through the product's own connector, page by page (keyset pages
over the primary key, as the index flow reads), with the operator's ungoverned view — or, for a
``masked_at_rest`` replica, a view with every mask of the contract applied *in the source's own SQL*,
so a raw value of a masked column never reaches the replica file and the masked values are exactly
those a masked reader gets from the source.

A run is ``full`` (every row into a fresh file) or ``incremental`` (a copy of the current file, plus
the rows whose cursor is past the last watermark, upserted by primary key; every
``deletes.full_compare_every``-th incremental run also drops the keys the source no longer has). A run
is full when asked, when the contract says ``refresh: full``, when there is no replica yet, or when the
contract's columns or masks changed since the replica was built.

The watermark is the largest cursor value the replica holds. A row is caught when its change moves
its cursor past it, so the cursor must grow with every change as the source commits it (a
``clock_timestamp()`` set by a trigger, a sequence): a row committed later with a cursor value at or
below a watermark already taken is missed until the next ``--full`` sync.

Atomicity and resumption: see :mod:`connectors._replica_file`. The run is recorded in the registry
(:class:`~catalog.replica_log.ReplicaLog`) only once its file is complete; a failed run is recorded as
``failed`` with its message and leaves the previous replica serving. Schema drift (a declared column
the source table lacks, or a type it cannot hold) stops the run before anything is written.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from catalog.compile import next_cursor
from catalog.compiler import Compiler
from catalog.contract import ProductContract
from catalog.errors import ContractError, InvalidRequestError
from catalog.policy import GovernedView
from catalog.principal import Principal
from catalog.query import Aggregate, Condition, Filter, Query
from catalog.replica import AnalyticalReplica, at_rest_masks, columns_digest
from catalog.replica_log import ReplicaLog, ReplicaSync
from catalog.validate import validate_against_source
from connectors._replica_file import REPLICA_TABLE, ReplicaFile, duckdb_type, generation_files
from connectors._replica_scan import postgres_extension, scan_statement, scanner_dsn
from connectors.base import Connector
from connectors.duckdb_replicas import replica_slug

__all__ = ["SYNCER", "SyncProgress", "SyncReport", "replica_folder", "replica_of", "sync_replica"]

#: The principal the refresher reads as; it is never checked against ``policy.access``.
SYNCER = Principal(name="dataproducts-sync", roles=frozenset({"sync"}))
#: Rows per page read from the source.
PAGE_ROWS = 50_000
#: Bytes one page may hold.
PAGE_BYTES = 512_000_000
#: Seconds one page may take.
PAGE_TIMEOUT_S = 600.0


@dataclass
class SyncProgress:
    """Where a run is: ``phase`` (reading, comparing keys, done), rows copied so far of ``rows_total``."""

    product: str
    phase: str
    rows_done: int
    rows_total: int | None


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class SyncReport:
    """What one run did."""

    product: str
    mode: str
    rows: int
    changed: int
    deleted: int
    seconds: float
    as_of: datetime
    path: Path


def replica_of(contract: ProductContract) -> AnalyticalReplica:
    """The contract's analytical replica.

    Raises:
        InvalidRequestError: the contract declares none.
    """
    replica = contract.replicas.analytical if contract.replicas else None
    if replica is None:
        raise InvalidRequestError(
            f"{contract.name} has no analytical replica; "
            "add replicas: {analytical: {refresh: full}} to its contract"
        )
    return replica


def replica_folder(root: Path, product: str) -> Path:
    """The folder of one product's replica generations under ``root``."""
    return root / replica_slug(product)


async def sync_replica(
    contract: ProductContract,
    source: Connector,
    compiler: Compiler,
    log: ReplicaLog,
    root: Path,
    *,
    full: bool = False,
    progress: ProgressCallback | None = None,
    page_rows: int = PAGE_ROWS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SyncReport:
    """Refresh the analytical replica of ``contract`` from ``source`` (see the module docstring).

    One run per product at a time: a run holds an exclusive lock on the product's replica folder
    (``.lock``, released by the system if the process dies), and a second run is refused at once.

    Raises:
        InvalidRequestError: the contract declares no replica, or a run of this product is under way.
        ContractError: schema drift: the source table lacks a declared column or holds another type.
        ConnectorError: the source or the registry failed (the previous replica keeps serving).
    """
    replica_of(contract)
    folder = replica_folder(root, contract.name)
    folder.mkdir(parents=True, exist_ok=True)
    with _run_lock(folder, contract.name):
        return await _sync_locked(
            contract, source, compiler, log, root, full=full, progress=progress, page_rows=page_rows, now=now
        )


@contextmanager
def _run_lock(folder: Path, product: str) -> Iterator[None]:
    handle = open(folder / ".lock", "a+", encoding="utf-8")  # held for the whole run
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidRequestError(
                f"a sync of {product} is already running; its replica is refreshed when it ends"
            ) from None
        yield
    finally:
        handle.close()


async def _sync_locked(
    contract: ProductContract,
    source: Connector,
    compiler: Compiler,
    log: ReplicaLog,
    root: Path,
    *,
    full: bool = False,
    progress: ProgressCallback | None = None,
    page_rows: int = PAGE_ROWS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SyncReport:
    replica = replica_of(contract)
    started = time.perf_counter()
    drift = await validate_against_source(contract, source)
    if drift:
        error = ContractError(
            f"{contract.name}: the source no longer matches the contract; the replica was left as it was. "
            "Update the contract (dataproducts register) or the source, then sync again",
            drift,
        )
        await _record_failure(log, contract, "full", started, error)
        raise error
    current = await anyio.to_thread.run_sync(log.current, contract.name)
    digest = columns_digest(contract)
    incremental = (
        not full
        and replica.refresh == "incremental"
        and current is not None
        and current.path is not None
        and Path(current.path).is_file()
        and current.columns_digest == digest
    )
    folder = replica_folder(root, contract.name)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_strays(folder, keep={Path(current.path)} if current and current.path else set())
    as_of = now()
    final = folder / f"{as_of:%Y%m%dT%H%M%S%f}.duckdb"
    types = await _types(contract, source)
    masks = at_rest_masks(contract) if replica.masked_at_rest else {}
    view = GovernedView(contract=contract, principal=SYNCER, masked=masks)
    pages = compiler.bounded(max_rows=page_rows, max_bytes=PAGE_BYTES, timeout_s=PAGE_TIMEOUT_S)
    mode: Literal["full", "incremental"] = "incremental" if incremental else "full"
    assert current is not None or not incremental
    runs_since_compare = (current.runs_since_compare or 0) + 1 if incremental and current else 0
    try:
        if incremental and current is not None and current.path is not None:
            target = await anyio.to_thread.run_sync(ReplicaFile.copy_of, Path(current.path), final, types)
        else:
            target = await anyio.to_thread.run_sync(ReplicaFile.create, final, types)
    except Exception as exc:
        await _record_failure(log, contract, mode, started, exc)
        raise
    try:
        where: list[Filter] = []
        if incremental and current is not None and current.watermark is not None:
            where = [Condition(column=replica.cursor or "", op=">", value=current.watermark)]
        total = await _count(view, source, pages, where)
        changed = 0
        key = list(contract.primary_key)
        extension, dsn = postgres_extension(root), scanner_dsn(source)
        if extension is not None and dsn is not None:  # PostgreSQL: binary COPY straight into DuckDB
            _emit(progress, contract.name, "reading (postgres scanner)", 0, total)
            changed_after = where[0] if where and isinstance(where[0], Condition) else None
            sql = scan_statement(view, list(types), hash_salt=compiler.hash_salt, changed_after=changed_after)
            upsert_key = key if incremental else None
            changed = await anyio.to_thread.run_sync(target.load_scanned, extension, dsn, sql, list(types), upsert_key)
            _emit(progress, contract.name, "reading (postgres scanner)", changed, total)
        else:
            async for columns, rows in _pages(view, source, pages, list(types), where):
                if incremental:
                    await anyio.to_thread.run_sync(target.upsert, columns, rows, key)
                else:
                    await anyio.to_thread.run_sync(target.append, columns, rows)
                changed += len(rows)
                _emit(progress, contract.name, "reading", changed, total)
        deleted = 0
        compare_every = replica.deletes.full_compare_every if replica.deletes else None
        if incremental and compare_every is not None and runs_since_compare >= compare_every:
            _emit(progress, contract.name, "comparing keys", changed, total)
            await anyio.to_thread.run_sync(target.start_keys, key)
            async for _, rows in _pages(view, source, pages, key, []):
                await anyio.to_thread.run_sync(target.add_keys, key, rows)
            deleted = await anyio.to_thread.run_sync(target.drop_missing_keys, key)
            runs_since_compare = 0
        rows_held = int(await anyio.to_thread.run_sync(target.scalar, f"SELECT count(*) FROM {REPLICA_TABLE}"))
        watermark = None
        if replica.cursor:
            cursor_sql = f'SELECT max("{replica.cursor}") FROM {REPLICA_TABLE}'
            watermark = _json_value(await anyio.to_thread.run_sync(target.scalar, cursor_sql))
        path = await anyio.to_thread.run_sync(target.finish)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(target.abandon)
            if isinstance(exc, Exception):
                await _record_failure(log, contract, mode, started, exc)
        raise
    seconds = time.perf_counter() - started
    run = ReplicaSync(
        product=contract.name,
        version=contract.version,
        mode=mode,
        status="ok",
        path=str(path),
        as_of=as_of,
        watermark=watermark,
        rows=rows_held,
        changed=changed,
        deleted=deleted,
        runs_since_compare=runs_since_compare,
        masked_at_rest=replica.masked_at_rest,
        columns_digest=digest,
        duration_ms=seconds * 1000,
        synced_at=now(),
    )
    await anyio.to_thread.run_sync(log.record, run)  # the switch: readers open the new file from here on
    _remove_strays(folder, keep={path, *([Path(current.path)] if current and current.path else [])})
    _emit(progress, contract.name, "done", changed, total)
    return SyncReport(contract.name, mode, rows_held, changed, deleted, seconds, as_of, path)


def _emit(progress: ProgressCallback | None, product: str, phase: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(SyncProgress(product, phase, done, total))


def _json_value(value: Any) -> Any:
    """A watermark as the registry keeps it (JSON): timestamps and dates as ISO text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def _types(contract: ProductContract, source: Connector) -> dict[str, str]:
    """Column → DuckDB type of the replica table (masked-at-rest columns hold text)."""
    native: dict[str, str] = {}
    if contract.source.table is not None:
        schema = await source.introspect(contract.source.table)
        native = {c.name: c.native_type for c in schema.columns}
    replica = replica_of(contract)
    masks = at_rest_masks(contract) if replica.masked_at_rest else {}
    return {c.name: "VARCHAR" if c.name in masks else duckdb_type(c.type, native.get(c.name)) for c in contract.columns}


async def _count(view: GovernedView, source: Connector, compiler: Compiler, where: list[Filter]) -> int:
    compiled = compiler.compile(view, Query(aggregates=[Aggregate(fn="count")], where=where))
    rowset = await source.execute(compiled.statement, compiled.limits)
    return int(rowset.rows[0][0]) if rowset.rows else 0


async def _pages(
    view: GovernedView, source: Connector, compiler: Compiler, columns: list[str], where: list[Filter]
) -> AsyncIterator[tuple[list[str], Sequence[Sequence[Any]]]]:
    """``(columns, rows)`` pages of ``view`` read from ``source`` (keyset over the primary key when it has one)."""
    cursor: str | None = None
    while True:
        query = Query(columns=columns, where=where, limit=compiler.limits.max_rows, cursor=cursor)
        compiled = compiler.compile(view, query)
        rowset = await source.execute(compiled.statement, compiled.limits)  # ungoverned: the operator's read
        if not rowset.rows and rowset.truncated:
            raise InvalidRequestError(f"{view.name}: one row is larger than {compiler.limits.max_bytes} bytes")
        rows = rowset.rows[: compiled.row_limit]
        if rows:
            yield rowset.columns, rows
        cursor = next_cursor(compiled, rowset)
        if cursor is None:
            return


async def _record_failure(
    log: ReplicaLog, contract: ProductContract, mode: Literal["full", "incremental"], started: float, exc: Exception
) -> None:
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    run = ReplicaSync(
        product=contract.name,
        version=contract.version,
        mode=mode,
        status="failed",
        duration_ms=(time.perf_counter() - started) * 1000,
        message=str(message)[:2000],
        synced_at=datetime.now(UTC),
    )
    try:
        await anyio.to_thread.run_sync(log.record, run)
    except Exception:  # the registry is down too: the original error is what the caller needs
        pass


def _remove_strays(folder: Path, *, keep: set[Path]) -> None:
    """Delete the generations of ``folder`` that are not kept (partial files of killed runs, old ones)."""
    for path in generation_files(folder):
        if path not in keep and path.with_suffix("") not in keep:
            path.unlink(missing_ok=True)
