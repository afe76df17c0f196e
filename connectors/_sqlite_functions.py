"""The SQL functions every SQLite connection of ours carries, in place of the ones the driver installs.

SQLAlchemy's pysqlite dialect registers two Python functions on every connection it opens:

``regexp(pattern, value)``
    Python's backtracking ``re.search``: ``'aaaa…!' REGEXP '(a+)+$'`` runs for minutes inside one
    call, holding the GIL, where the progress handler that enforces the statement's time budget
    cannot interrupt it. Ours matches with RE2 (the engine DuckDB uses), in time linear in the value.
``floor(x)``
    ``math.floor``, in place of SQLite's built-in: it raises on NULL, text and infinities. Ours is
    SQLite's own ``floor()``, evaluated by a pristine in-memory connection of this thread (so every
    type behaves as SQLite documents), or a NULL-safe equivalent where SQLite lacks math functions.

``md5(text)`` is ours: governance masks columns with it.

:func:`install` registers the three; it must run after the dialect's own connect hook.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from functools import lru_cache
from typing import Any

import re2

__all__ = ["install"]

_PRISTINE = threading.local()
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's error, reported once, not logged by RE2


def install(connection: sqlite3.Connection) -> None:
    connection.create_function("md5", 1, _md5, deterministic=True)
    connection.create_function("regexp", 2, _regexp, deterministic=True)
    connection.create_function("floor", 1, _floor, deterministic=True)


def _md5(value: object) -> str | None:
    if value is None:
        return None
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _regexp(pattern: Any, value: Any) -> int | None:
    """``value REGEXP pattern`` (SQLite passes the pattern first): 1, 0, or NULL when either is NULL."""
    if pattern is None or value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return int(_compiled(str(pattern)).search(text) is not None)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _floor(value: Any) -> Any:
    pristine = _pristine()
    if pristine is None:
        return _python_floor(value)
    return pristine.execute("SELECT floor(?)", (value,)).fetchone()[0]


def _pristine() -> sqlite3.Connection | None:
    """This thread's connection without any function of ours or of the driver (None: no math functions)."""
    if not hasattr(_PRISTINE, "connection"):
        connection = sqlite3.connect(":memory:")
        try:
            connection.execute("SELECT floor(1.5)")
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_MATH_FUNCTIONS
            connection.close()
            _PRISTINE.connection = None
        else:
            _PRISTINE.connection = connection
    pristine: sqlite3.Connection | None = _PRISTINE.connection
    return pristine


def _python_floor(value: Any) -> Any:
    """SQLite's ``floor()`` rules: integers unchanged, reals floored, numeric text converted, else NULL."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(math.floor(value))
    return None
