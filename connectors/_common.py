"""Helpers shared by the built-in store connectors: the capped fetch loop and error texts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from catalog.contract import ColumnType
from catalog.errors import NotFoundError, QueryTimeoutError
from catalog.query import Limits, RowSet
from catalog.suggest import close_matches
from connectors.base import estimate_row_bytes

__all__ = [
    "Deadline",
    "driver_message",
    "fetch_capped",
    "known_type",
    "neutral_type",
    "timeout_message",
    "unknown_table",
]

MAX_BATCH = 1000
_LISTED = 30  # table names listed in a not-found message


class Deadline:
    """A point in time after which a running statement counts as timed out."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def check(self) -> None:
        """Raises:
        QueryTimeoutError: the deadline has passed.
        """
        if self.passed:
            raise QueryTimeoutError(timeout_message(self.timeout_s))


def timeout_message(timeout_s: float) -> str:
    return f"the statement ran longer than its {timeout_s:g}s time budget and was cancelled; narrow the query"


def fetch_capped(
    columns: list[str],
    fetchmany: Callable[[int], Sequence[Sequence[Any]]],
    limits: Limits,
    deadline: Deadline | None = None,
) -> RowSet:
    """Pull rows in batches until the result ends or ``limits.max_rows`` / ``limits.max_bytes`` is reached.

    The statement is expected to carry ``LIMIT max_rows + 1`` so one extra row tells that more
    existed; the caps are enforced here whatever the statement says. A row that would overflow the
    byte budget is not returned.

    Raises:
        QueryTimeoutError: ``deadline`` passed between two batches.
    """
    rows: list[tuple[Any, ...]] = []
    size = 0
    batch_size = min(limits.max_rows + 1, MAX_BATCH)
    while True:
        if deadline is not None:
            deadline.check()
        batch = fetchmany(batch_size)
        if not batch:
            return RowSet(columns=columns, rows=rows, bytes=size)
        for raw in batch:
            if len(rows) == limits.max_rows:
                return RowSet(columns=columns, rows=rows, truncated=True, truncated_by="rows", bytes=size)
            row = tuple(raw)
            row_size = estimate_row_bytes(row)
            if size + row_size > limits.max_bytes:
                return RowSet(columns=columns, rows=rows, truncated=True, truncated_by="bytes", bytes=size)
            rows.append(row)
            size += row_size


def unknown_table(connection: str, table: str, assets: list[str]) -> NotFoundError:
    """A not-found error naming the tables that exist, closest matches first."""
    close = close_matches(table, assets, n=3, cutoff=0.5)
    ordered = close + sorted(a for a in assets if a not in close)
    listed = ", ".join(ordered[:_LISTED]) + (f", … ({len(ordered) - _LISTED} more)" if len(ordered) > _LISTED else "")
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    where = f"tables are: {listed}" if ordered else "it has no tables or views"
    return NotFoundError(f"unknown table {table!r} on connection {connection!r}{hint} {where}")


def driver_message(exc: BaseException | None) -> str:
    """The driver's own message without the SQL text it may quote (``LINE 1: SELECT ...``)."""
    diag = getattr(exc, "diag", None)  # psycopg
    primary = getattr(diag, "message_primary", None)
    if primary:
        hint = getattr(diag, "message_hint", None)
        return f"{primary} ({hint})" if hint else str(primary)
    if exc is None:
        return "unknown driver error"
    text = str(exc).strip()
    for marker in ("\nLINE ", "\n[SQL:"):
        text = text.split(marker, 1)[0]
    return text.strip() or type(exc).__name__


# Type names per column type, ``|``-separated, as SQLite declares them, PostgreSQL's format_type() and
# DuckDB's DESCRIBE print them (parameters such as ``(10,2)`` are stripped before the lookup).
_NATIVE_TYPES: dict[ColumnType, str] = {
    "boolean": "BOOL|BOOLEAN|LOGICAL",
    "integer": "INT|INTEGER|INT2|INT4|INT8|SMALLINT|BIGINT|TINYINT|MEDIUMINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER"
    "|UBIGINT|UHUGEINT|SERIAL|SMALLSERIAL|BIGSERIAL|UNSIGNED BIG INT|INT64|LONG|SHORT|OID",
    "float": "REAL|FLOAT|FLOAT4|FLOAT8|DOUBLE|DOUBLE PRECISION",
    "decimal": "DECIMAL|NUMERIC|NUMBER",
    "date": "DATE",
    "timestamp": "TIMESTAMP|DATETIME|TIMESTAMPTZ|TIMESTAMP WITHOUT TIME ZONE|TIMESTAMP WITH TIME ZONE|TIMESTAMP_S"
    "|TIMESTAMP_MS|TIMESTAMP_NS|TIMESTAMP_US",
    "time": "TIME|TIMETZ|TIME WITHOUT TIME ZONE|TIME WITH TIME ZONE",
    "json": "JSON|JSONB",
    "bytes": "BLOB|BYTEA|BINARY|VARBINARY|BYTES|LONGBLOB",
    "string": "TEXT|VARCHAR|CHAR|CHARACTER|CHARACTER VARYING|BPCHAR|NCHAR|NVARCHAR|CLOB|STRING|NAME|CITEXT|UUID|ENUM"
    "|INET|CIDR|MACADDR|XML|INTERVAL|BIT|BIT VARYING|MONEY",
}
_BY_NAME = {name: neutral for neutral, names in _NATIVE_TYPES.items() for name in names.split("|")}
_PARAMS = re.compile(r"\([^()]*\)")


def known_type(native: str) -> ColumnType | None:
    """The column type of a store's type name (``numeric(10,2)``, ``TIMESTAMP WITH TIME ZONE``, ``INTEGER[]``).

    Arrays, lists, structs and maps are ``json``; None for a name not known here.
    """
    name = " ".join(_PARAMS.sub("", native).upper().split())
    if name.endswith("]") or name.startswith(("STRUCT", "MAP", "LIST", "UNION", "ARRAY")):
        return "json"
    return _BY_NAME.get(name)


def neutral_type(native: str, default: ColumnType = "string") -> ColumnType:
    """:func:`known_type`, or ``default`` for a name not known here."""
    return known_type(native) or default
