"""Time buckets that every store computes alike: hour, day, week (ISO, from Monday), month, quarter, year.

:func:`bucket` renders the start of a value's bucket explicitly for each dialect, so that SQLite,
PostgreSQL and DuckDB put every instant in the same bucket:

* PostgreSQL and DuckDB: ``DATE_TRUNC('<grain>', CAST(col AS TIMESTAMP))`` (both start weeks on Monday);
* SQLite, whose dates are text: ``STRFTIME`` / ``DATE(col, 'weekday 0', '-6 days')`` for the Monday of
  the ISO week, and the first month of the quarter computed from the month number.

Timestamps are taken as UTC wall-clock time (the contract's convention). :func:`bucket_text` turns
what a store returns into one ISO 8601 text: ``2024-05-06`` for day and coarser grains,
``2024-05-06T13:00:00`` for hours; :func:`bucket_of` is the same bucketing in Python, the reference the
tests hold the stores to.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlglot import exp

__all__ = ["GRAINS", "bucket", "bucket_of", "bucket_text"]

GRAINS = ("hour", "day", "week", "month", "quarter", "year")
_TIMESTAMP = exp.DataType.build("timestamp")
_SQLITE_FORMATS = {
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d",
    "month": "%Y-%m-01",
    "year": "%Y-01-01",
}


def _call(name: str, *args: exp.Expr) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def bucket(column: exp.Expr, grain: str, *, dialect: str, date: bool = False) -> exp.Expr:
    """The start of ``column``'s ``grain`` bucket, as ``dialect`` computes it.

    ``date`` says the column holds dates: DuckDB then truncates them as they are (to a date), saving a
    cast per row; PostgreSQL still casts, since its ``date_trunc`` would read a date in the session's
    time zone.

    Raises:
        ValueError: an unknown grain.
    """
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}; grains are {', '.join(GRAINS)}")
    if dialect == "duckdb" and date and grain != "hour":
        return _call("DATE_TRUNC", exp.Literal.string(grain), column)
    if dialect != "sqlite":
        return _call("DATE_TRUNC", exp.Literal.string(grain), exp.Cast(this=column, to=_TIMESTAMP.copy()))
    if grain in _SQLITE_FORMATS:
        return _call("STRFTIME", exp.Literal.string(_SQLITE_FORMATS[grain]), column)
    if grain == "week":  # 'weekday 0' moves to the next Sunday (or stays on one); six days back is its Monday
        return _call("DATE", column, exp.Literal.string("weekday 0"), exp.Literal.string("-6 days"))
    month = exp.Cast(this=_call("STRFTIME", exp.Literal.string("%m"), column.copy()), to=exp.DataType.build("int"))
    # the quarter's first month: m - (m - 1) % 3
    first = exp.Sub(
        this=month,
        expression=exp.paren(
            exp.Mod(
                this=exp.paren(exp.Sub(this=month.copy(), expression=exp.Literal.number(1))),
                expression=exp.Literal.number(3),
            )
        ),
    )
    year = _call("STRFTIME", exp.Literal.string("%Y"), column)
    return _call("PRINTF", exp.Literal.string("%s-%02d-01"), year, first)


def bucket_text(value: Any, grain: str) -> str | None:
    """A bucket start as a store returned it (datetime, date or text), as ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:00:00") if grain == "hour" else value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat() if grain != "hour" else f"{value.isoformat()}T00:00:00"
    raise TypeError(f"not a time bucket: {value!r}")


def bucket_of(value: dt.date | dt.datetime, grain: str) -> str:
    """The bucket of ``value`` computed in Python: what every store must return for it."""
    if grain == "hour":
        assert isinstance(value, dt.datetime)
        return value.strftime("%Y-%m-%dT%H:00:00")
    day = value.date() if isinstance(value, dt.datetime) else value
    if grain == "week":
        day -= dt.timedelta(days=day.weekday())
    elif grain == "month":
        day = day.replace(day=1)
    elif grain == "quarter":
        day = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    elif grain == "year":
        day = day.replace(month=1, day=1)
    return day.isoformat()
