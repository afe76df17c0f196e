"""One generation of an analytical replica: a DuckDB file holding one table, written by one refresh run.

A run never writes the file readers use. It writes ``<generation>.duckdb.partial`` next to it (a fresh
file for a full refresh, a byte copy of the current generation for an incremental one), closes it,
renames it to ``<generation>.duckdb`` (``os.replace``) and only then records it as current in the
registry. Readers open the file the registry names, so they see the previous generation or the new
one, never a half-written one; a run killed at any point leaves at most a stray ``.partial`` (or an
unrecorded generation) that the next run removes.

Pages arrive as Python rows from the source connector and go in as Arrow tables, cast to the
column's DuckDB type; an upsert replaces rows by primary key (delete, then insert).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from catalog.replica_route import REPLICA_TABLE

__all__ = ["REPLICA_TABLE", "ReplicaFile", "duckdb_type", "generation_files"]

PARTIAL = ".partial"

_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "decimal": "DECIMAL(38, 10)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "time": "TIME",
    "json": "VARCHAR",
    "bytes": "BLOB",
}
_FIXED = re.compile(r"^(numeric|decimal)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_FLOATS = frozenset({"real", "double", "double precision", "float", "float4", "float8"})
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def duckdb_type(column_type: str, native: str | None = None) -> str:
    """The DuckDB type a replica stores a contract column type in (``native``: the source's own type,
    when known, keeps ``timestamp with time zone`` aware)."""
    kind = (native or "").lower().strip()
    if column_type == "timestamp" and (kind == "timestamptz" or ("with time zone" in kind and "without" not in kind)):
        return "TIMESTAMPTZ"
    if column_type == "decimal":
        # the source's own precision: DECIMAL(15, 2) sums as 64-bit integers, DECIMAL(38, 10) as 128-bit ones
        fixed = _FIXED.match(kind)
        if fixed and int(fixed.group(2)) <= 38:
            return f"DECIMAL({fixed.group(2)}, {fixed.group(3) or 0})"
        if kind in _FLOATS:  # SQLite keeps decimals as REAL: a double holds exactly what the source holds
            return "DOUBLE"
    return _TYPES[column_type]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def generation_files(folder: Path) -> list[Path]:
    """The replica files of one product's folder (finished and partial), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith((".duckdb", ".duckdb" + PARTIAL, ".duckdb.wal")))


class ReplicaFile:
    """A replica generation being written: open with :meth:`create` or :meth:`copy_of`, end with :meth:`finish`."""

    def __init__(self, final: Path, conn: duckdb.DuckDBPyConnection, types: dict[str, str]) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL)
        self.conn = conn
        self.types = types

    @classmethod
    def create(cls, final: Path, types: dict[str, str]) -> ReplicaFile:
        """A new, empty generation with the replica table of ``types`` (column → DuckDB type)."""
        partial = final.with_name(final.name + PARTIAL)
        partial.unlink(missing_ok=True)
        conn = duckdb.connect(str(partial), config=_CONFIG)
        columns = ", ".join(f"{_ident(name)} {kind}" for name, kind in types.items())
        conn.execute(f"CREATE TABLE {REPLICA_TABLE} ({columns})")
        return cls(final, conn, types)

    @classmethod
    def copy_of(cls, current: Path, final: Path, types: dict[str, str]) -> ReplicaFile:
        """A new generation starting as a byte copy of ``current`` (an incremental run changes the copy)."""
        partial = final.with_name(final.name + PARTIAL)
        shutil.copyfile(current, partial)
        return cls(final, duckdb.connect(str(partial), config=_CONFIG), types)

    def _arrow(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
        arrays = []
        for i, name in enumerate(columns):
            values = [row[i] for row in rows]
            if self.types.get(name) == "VARCHAR" and any(isinstance(v, dict | list) for v in values):
                values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
            try:
                arrays.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python types (SQLite): text, cast by DuckDB
                arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
        return pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(columns))])

    def _select(self, columns: Sequence[str]) -> str:
        return ", ".join(f"CAST(c{i} AS {self.types[name]}) AS {_ident(name)}" for i, name in enumerate(columns))

    def append(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (in ``columns`` order)."""
        if not rows:
            return
        self.conn.register("page", self._arrow(columns, rows))
        names = ", ".join(_ident(c) for c in columns)
        self.conn.execute(f"INSERT INTO {REPLICA_TABLE} ({names}) SELECT {self._select(columns)} FROM page")
        self.conn.unregister("page")

    def upsert(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]) -> None:
        """Replace the rows whose ``key`` matches one of ``rows``, and insert the others, in one transaction."""
        if not rows:
            return
        self.conn.register("page", self._arrow(columns, rows))
        names = ", ".join(_ident(c) for c in columns)
        match = " AND ".join(f"{REPLICA_TABLE}.{_ident(k)} IS NOT DISTINCT FROM changed.{_ident(k)}" for k in key)
        self.conn.execute("BEGIN")
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE changed AS SELECT {self._select(columns)} FROM page")
        self.conn.execute(f"DELETE FROM {REPLICA_TABLE} USING changed WHERE {match}")
        self.conn.execute(f"INSERT INTO {REPLICA_TABLE} ({names}) SELECT {names} FROM changed")
        self.conn.execute("DROP TABLE changed")
        self.conn.execute("COMMIT")
        self.conn.unregister("page")

    def load_scanned(
        self, extension: Path, dsn: str, sql: str, columns: Sequence[str], key: Sequence[str] | None
    ) -> int:
        """Copy the rows PostgreSQL returns for ``sql`` (read by the ``postgres`` scanner at ``extension``):
        appended, or upserted by ``key`` when given. How many rows came.
        """
        self.conn.execute(f"LOAD {_literal(str(extension))}")
        self.conn.execute(f"ATTACH {_literal(dsn)} AS scanned_source (TYPE postgres, READ_ONLY)")
        try:
            names = ", ".join(_ident(c) for c in columns)
            casts = ", ".join(f"CAST({_ident(c)} AS {self.types[c]}) AS {_ident(c)}" for c in columns)
            rows = f"SELECT {casts} FROM postgres_query('scanned_source', {_literal(sql)})"
            self.conn.execute("BEGIN")
            self.conn.execute(f"CREATE OR REPLACE TEMP TABLE changed AS {rows}")
            (count,) = self.conn.execute("SELECT count(*) FROM changed").fetchone() or (0,)
            if key:
                match = " AND ".join(
                    f"{REPLICA_TABLE}.{_ident(k)} IS NOT DISTINCT FROM changed.{_ident(k)}" for k in key
                )
                self.conn.execute(f"DELETE FROM {REPLICA_TABLE} USING changed WHERE {match}")
            self.conn.execute(f"INSERT INTO {REPLICA_TABLE} ({names}) SELECT {names} FROM changed")
            self.conn.execute("DROP TABLE changed")
            self.conn.execute("COMMIT")
        finally:
            self.conn.execute("DETACH scanned_source")
        return int(count)

    def start_keys(self, key: Sequence[str]) -> None:
        """Begin a full key comparison: :meth:`add_keys` every source key, then :meth:`drop_missing_keys`."""
        columns = ", ".join(f"{_ident(k)} {self.types[k]}" for k in key)
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE source_keys ({columns})")

    def add_keys(self, key: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        self.conn.register("page", self._arrow(key, rows))
        self.conn.execute(f"INSERT INTO source_keys SELECT {self._select(key)} FROM page")
        self.conn.unregister("page")

    def drop_missing_keys(self, key: Sequence[str]) -> int:
        """Delete the replica rows whose key the source no longer has; how many went."""
        match = " AND ".join(f"s.{_ident(k)} IS NOT DISTINCT FROM {REPLICA_TABLE}.{_ident(k)}" for k in key)
        found = self.conn.execute(
            f"DELETE FROM {REPLICA_TABLE} WHERE NOT EXISTS (SELECT 1 FROM source_keys s WHERE {match})"
        ).fetchone()
        self.conn.execute("DROP TABLE source_keys")
        return int(found[0]) if found else 0

    def scalar(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        return row[0] if row else None

    def finish(self) -> Path:
        """Checkpoint, close and rename the partial file to its final name; the final path."""
        self.conn.execute("CHECKPOINT")
        self.conn.close()
        with open(self.partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return self.final

    def abandon(self) -> None:
        """Close and delete the partial file (a failed run)."""
        try:
            self.conn.close()
        finally:
            self.partial.unlink(missing_ok=True)
            self.partial.with_name(self.partial.name + ".wal").unlink(missing_ok=True)
