"""Timestamps as stores return them, made comparable: one aware UTC :class:`~datetime.datetime`.

Stores disagree on what ``max(ordered_at)`` gives back: PostgreSQL and DuckDB return ``datetime``
(naive for ``timestamp``, aware for ``timestamptz``) or ``date``; SQLite returns the text it stored
(``2026-11-30 09:00:00``, ISO 8601 with ``T`` or an offset, or a bare date). :func:`to_utc` reads all
of them. Naive values are taken as UTC (the contracts say their timestamps are UTC); a date is the
start of that day in UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

__all__ = ["format_age", "to_utc"]


def to_utc(value: object) -> datetime:
    """``value`` as an aware UTC datetime.

    Raises:
        ValueError: ``value`` is None, or neither a datetime, a date nor ISO 8601 text; the message
            shows what was read.
    """
    if value is None:
        raise ValueError("no value (the product has no rows, or the column is empty)")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time.min)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value[:40]!r} is not a timestamp; store ISO 8601 text such as 2026-01-31 12:00:00"
            ) from None
    else:
        raise ValueError(f"a {type(value).__name__} ({str(value)[:40]}) is not a timestamp or a date")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_age(seconds: float) -> str:
    """A short human age: ``45s``, ``12m``, ``5h 3m``, ``3d 4h``."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"
