"""When the registry's database cannot be used now, and the one message that says so.

A registry (and the audit log in the same database) is *unavailable* when the database cannot be
reached (PostgreSQL stopped, restarting or unreachable; a SQLite file that cannot be opened), is locked
by another writer for longer than the busy timeout, or is out of space. These are not bugs of the call:
nothing was served or changed, and the same call succeeds once the database is back, so they surface
as :class:`~catalog.errors.UnavailableError` (code ``unavailable``) rather than as a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from catalog.errors import UnavailableError

__all__ = ["database_name", "guard_availability", "unavailable_reason"]

P = ParamSpec("P")
T = TypeVar("T")

# SQLSTATE classes of a server that is going away or not accepting connections yet
_PG_UNAVAILABLE = ("08", "57P")
_RETRY = "retry once it is back"
# (driver message, what happened, what to do)
_SQLITE_REASONS = (
    ("database is locked", "is locked by another writer (waited for the busy timeout)", "retry once it is done"),
    ("unable to open database file", "cannot be opened", "check that its folder exists and is writable, then retry"),
    ("database or disk is full", "is out of space", "free some space, then retry"),
    ("disk i/o error", "failed to write to disk", "free some space (or raise the file-size limit), then retry"),
    ("readonly database", "is read-only", "make the file writable, then retry"),
)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database behind ``exc`` cannot be used now and what to do, as a phrase after "the database
    …", or None when ``exc`` is another failure (a bug, a constraint, a bad statement)."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
    lowered = first.lower()
    for marker, reason, fix in _SQLITE_REASONS:
        if marker in lowered:
            return f"{reason} ({first}): {fix}"
    sqlstate = getattr(orig, "sqlstate", None)
    if exc.connection_invalidated or (
        type(orig).__name__ in ("OperationalError", "InterfaceError")
        and (sqlstate is None or sqlstate.startswith(_PG_UNAVAILABLE))
        and "sqlite" not in type(orig).__module__
    ):
        return f"cannot be reached ({first}): {_RETRY}"
    return None


def database_name(engine: Engine) -> str:
    """The engine's URL without its password: what a message may name."""
    return engine.url.render_as_string(hide_password=True)


def guard_availability(what: str, engine_of: Callable[..., Engine]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a method so that an unavailable database raises :class:`UnavailableError`.

    ``what`` names the database in the message ("registry"); ``engine_of(self)`` gives its engine.
    """

    def decorate(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return method(*args, **kwargs)
            except DBAPIError as exc:
                reason = unavailable_reason(exc)
                if reason is None:
                    raise
                raise UnavailableError(
                    f"nothing was served or changed: the {what} database {database_name(engine_of(args[0]))} {reason}"
                ) from exc

        return guarded

    return decorate
