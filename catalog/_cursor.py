"""Opaque page cursors: urlsafe-base64 JSON that round-trips driver values through tagged JSON.

A cursor holds either the last row's order-key values (keyset pagination) or a row offset, plus a
digest of the query shape so that a cursor handed to a different query is refused. Cursors are not
secret: they only hold values the caller has already been shown (masked ones masked), and a forged
cursor can do no more than an extra filter could.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from catalog.errors import InvalidRequestError

__all__ = ["Cursor", "decode_cursor", "encode_cursor", "from_json_value", "shape_digest", "to_json_value"]

_VERSION = 1


@dataclass(frozen=True)
class Cursor:
    """A decoded cursor: ``after`` holds the last row's key values (keyset) or ``offset`` the rows consumed."""

    shape: str
    mode: Literal["keyset", "offset"]
    after: tuple[Any, ...] = ()
    offset: int = 0


def shape_digest(parts: object) -> str:
    """A short stable digest of a JSON-able description of a query."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def to_json_value(value: Any) -> Any:
    """A driver value as JSON that :func:`from_json_value` turns back into the same type."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$t": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"$u": str(value)}
    return {"$s": str(value)}


_DECODERS: dict[str, Any] = {
    "$f": float,
    "$dec": decimal.Decimal,
    "$dt": dt.datetime.fromisoformat,
    "$d": dt.date.fromisoformat,
    "$t": dt.time.fromisoformat,
    "$b": base64.b64decode,
    "$u": uuid.UUID,
    "$s": str,
}


def from_json_value(value: Any) -> Any:
    """Inverse of :func:`to_json_value`.

    Raises:
        ValueError: an unknown tag or a malformed tagged value.
    """
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError("tagged value must have exactly one key")
        ((tag, raw),) = value.items()
        if tag not in _DECODERS or not isinstance(raw, str):
            raise ValueError(f"unknown tagged value {tag!r}")
        return _DECODERS[tag](raw)
    if isinstance(value, list):
        raise ValueError("lists are not cursor values")
    return value


def encode_cursor(cursor: Cursor) -> str:
    """The cursor as an opaque urlsafe-base64 string."""
    body: dict[str, Any] = {"v": _VERSION, "s": cursor.shape, "m": cursor.mode}
    if cursor.mode == "keyset":
        body["k"] = [to_json_value(v) for v in cursor.after]
    else:
        body["o"] = cursor.offset
    raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str, *, shape: str) -> Cursor:
    """Decode a cursor made by :func:`encode_cursor` for a query of the given shape.

    Raises:
        InvalidRequestError: the text is not a cursor, or it was issued for a different query.
    """
    invalid = "invalid cursor: pass next_cursor exactly as returned by the previous page of the same query"
    try:
        padded = text + "=" * (-len(text) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("not a cursor")
        mode = body["m"]
        if mode == "keyset":
            keys = body["k"]
            if not isinstance(keys, list):
                raise ValueError("keys must be a list")
            cursor = Cursor(shape=str(body["s"]), mode="keyset", after=tuple(from_json_value(v) for v in keys))
        elif mode == "offset":
            offset = body["o"]
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError("offset must be a non-negative integer")
            cursor = Cursor(shape=str(body["s"]), mode="offset", offset=offset)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error, decimal.InvalidOperation) as exc:
        raise InvalidRequestError(invalid) from exc
    if cursor.shape != shape:
        raise InvalidRequestError(
            "this cursor belongs to a different query: keep columns, where, order_by, group_by and aggregates "
            "unchanged between pages (only limit may change), or drop the cursor to start again"
        )
    return cursor
