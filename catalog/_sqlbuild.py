"""Private helpers shared by :mod:`catalog.compile` and :mod:`catalog.sqlguard`: masks, literals, names."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from catalog.errors import InvalidRequestError
from catalog.suggest import close_matches

__all__ = ["bindable", "column_ref", "literal", "mask_expression", "resolve_column", "unknown_column_message"]

_TEXT = exp.DataType.build("text")
#: Partial masks reveal the last ``_PARTIAL_KEEP`` characters of values at least ``_PARTIAL_MIN`` long.
_PARTIAL_KEEP = 4
_PARTIAL_MIN = 8
REDACTED = "***"


def _text(column: exp.Expr) -> exp.Cast:
    return exp.Cast(this=column.copy(), to=_TEXT.copy())


def _null_text() -> exp.Cast:
    return exp.Cast(this=exp.null(), to=_TEXT.copy())


def mask_expression(column: str, method: str, *, hash_salt: str, table: str | None = None) -> exp.Expr:
    """The SQL expression that replaces a masked column; every method yields text (NULL stays NULL).

    * ``hash``: ``MD5(salt || CAST(col AS TEXT))`` — stable, so counts and joins still work, and salted
      so a caller cannot dictionary-match known values.
    * ``redact``: the constant ``'***'``.
    * ``partial``: ``'***'`` followed by the last 4 characters, only for values of 8 characters or more.
    * ``null``: NULL.

    Raises:
        ValueError: an unknown method.
    """
    col = column_ref(column, table)
    is_null = exp.Is(this=col.copy(), expression=exp.null())
    if method == "hash":
        return exp.MD5(this=exp.DPipe(this=exp.Literal.string(hash_salt), expression=_text(col)))
    if method == "redact":
        return exp.Case(ifs=[exp.If(this=is_null, true=_null_text())], default=exp.Literal.string(REDACTED))
    if method == "partial":
        length = exp.Length(this=_text(col))
        tail = exp.Substring(
            this=_text(col), start=exp.Sub(this=length.copy(), expression=exp.Literal.number(_PARTIAL_KEEP - 1))
        )
        long_enough = exp.GTE(this=length, expression=exp.Literal.number(_PARTIAL_MIN))
        return exp.Case(
            ifs=[
                exp.If(this=is_null, true=_null_text()),
                exp.If(this=long_enough, true=exp.DPipe(this=exp.Literal.string(REDACTED), expression=tail)),
            ],
            default=exp.Literal.string(REDACTED),
        )
    if method == "null":
        return _null_text()
    raise ValueError(f"unknown mask method {method!r}")


def column_ref(name: str, table: str | None = None) -> exp.Column:
    """A quoted column reference, optionally qualified by a quoted table alias."""
    return exp.column(name, table=table, quoted=True)


def unknown_column_message(name: str, known: Sequence[str], *, where: str = "") -> str:
    """``unknown column 'amout' in sales.orders; did you mean 'amount'? columns are …``."""
    close = close_matches(name, known, ignore_case=True)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    place = f" in {where}" if where else ""
    return f"unknown column {name!r}{place}{hint} columns are {', '.join(known)}"


def resolve_column(name: str, known: Sequence[str], *, where: str = "") -> str:
    """The declared spelling of ``name`` (exact, else the one case-insensitive match).

    Raises:
        InvalidRequestError: no such column; the message suggests a close match and lists the columns.
    """
    if name in known:
        return name
    folded = [k for k in known if k.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidRequestError(unknown_column_message(name, known, where=where))


def bindable(value: Any) -> Any:
    """``value`` checked for a statement: returned unchanged, as a parameter the store's driver binds.

    Raises:
        InvalidRequestError: a value SQL cannot carry (NUL characters, NaN/infinity, lists).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequestError(f"value {value!r} is not a finite number")
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        raise InvalidRequestError(f"value {value!r} is not a finite number")
    if isinstance(value, str) and "\x00" in value:
        raise InvalidRequestError("string values may not contain NUL characters")
    if value is None or isinstance(value, bool | int | float | decimal.Decimal | dt.date | dt.time | str):
        return value
    raise InvalidRequestError(f"cannot use a value of type {type(value).__name__} in a filter")


def literal(value: Any) -> exp.Expr:
    """A SQL literal for a Python value; strings are quoted by sqlglot for the target dialect.

    Raises:
        InvalidRequestError: as :func:`bindable`.
    """
    bindable(value)
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        return exp.Literal.number(repr(value))
    if isinstance(value, decimal.Decimal):
        return exp.Literal.number(str(value))
    if isinstance(value, dt.datetime):
        return exp.Literal.string(value.isoformat(sep=" "))
    if isinstance(value, dt.date | dt.time):
        return exp.Literal.string(value.isoformat())
    return exp.Literal.string(value)
