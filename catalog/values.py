"""Driver values as JSON: the one conversion used for result rows, search-hit keys and index keys."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from typing import Any

__all__ = ["json_value"]


def json_value(value: Any) -> Any:
    """A driver value as JSON: decimals as numbers, times as ISO 8601, bytes as base64."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)
