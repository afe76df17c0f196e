"""Column types of a SQLite table that declares none, read from its stored values.

SQLite is dynamically typed: ``CREATE TABLE t(a, b)`` is legal and each value keeps its own storage
class (``typeof``: integer, real, text, blob, null). For such columns ``init`` and ``validate``
use the storage classes of a bounded sample of rows instead of the (empty) declared type, and say
so when the values disagree, e.g. "mixed: 950 integer, 50 text in a 1000-row sample".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from catalog.contract import ColumnType

__all__ = ["SAMPLE_ROWS", "infer_column_types", "type_of_values"]

#: Rows read to infer the type of a column without a declared type.
SAMPLE_ROWS = 1000

_NEUTRAL: dict[str, ColumnType] = {"integer": "integer", "real": "float", "text": "string", "blob": "bytes"}


def infer_column_types(conn: sa.Connection, quoted_table: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    """For each of ``columns``: the ``type`` its sampled values show and an ``inferred`` note saying how."""
    probes = ", ".join("typeof(" + '"' + name.replace('"', '""') + '")' for name in columns)
    rows = conn.exec_driver_sql(f"SELECT {probes} FROM {quoted_table} LIMIT {SAMPLE_ROWS}").all()
    found: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(columns):
        counts = Counter(str(row[index]) for row in rows)
        column_type, note = type_of_values(counts, sampled=len(rows), whole_table=len(rows) < SAMPLE_ROWS)
        found[name] = {"type": column_type, "inferred": note}
    return found


def type_of_values(counts: Counter[str], *, sampled: int, whole_table: bool = False) -> tuple[ColumnType, str]:
    """The neutral type for values of these storage classes (``typeof`` → count), and a note for the draft.

    Integers and reals together are a float column. Otherwise the most frequent class wins and the
    note lists them all, so the owner can decide (or cast in a source query).
    """
    sample = f"all {sampled:,} rows" if whole_table else f"a {sampled:,}-row sample"
    values = {k: v for k, v in counts.items() if k in _NEUTRAL}
    if not values:
        return "string", f"no values in {sample} to infer it from; check it"
    kinds = set(values)
    if kinds == {"integer", "real"}:
        return "float", f"inferred from {sample} (integer and real values)"
    if len(kinds) == 1:
        return _NEUTRAL[kinds.pop()], f"inferred from {sample}"
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    listing = ", ".join(f"{n:,} {kind}" for kind, n in ranked)
    return _NEUTRAL[ranked[0][0]], f"mixed: {listing} in {sample}; check it"
