"""The text content of a tool result: the structured content, compact, for agents that read text.

A tool result carries its structured content twice: as JSON for clients that read ``structuredContent``
and as text for the model. The text is what an agent pays for in tokens, so it is the structured
content written as compactly as it can be read back exactly:

* a tabular result (``columns`` plus ``rows`` of as many cells, as ``query_product``, ``run_sql`` and
  ``query_metrics`` return) is three parts, one per line: the other keys as one compact JSON object,
  then the column names, then one line per row, cells separated by commas::

      {"row_count":2,"truncated":false,"next_cursor":null,"masked_columns":[],"warnings":[],"freshness":[]}
      order_id,status,amount,note
      1,delivered,12.5,
      2,"1,5",7,"null"

* any other result is its JSON, compact (no indentation, no spaces).

A cell is read as: empty for null; ``true``/``false``; a JSON number; a ``"quoted"`` JSON string (a
string is quoted whenever it would read otherwise bare: empty, number-like, ``null``/``true``/``false``,
or holding a comma, quote, line break, surrounding space or another unprintable character); a JSON
array or object (``[...]``/``{...}``); else the text as it stands, a string. Line breaks inside values
are always escaped, so every row is exactly one line. :func:`read_result_text` reads the text back into
the structured content it came from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pydantic_core

__all__ = ["read_result_text", "result_text"]

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
_WORDS = frozenset({"null", "true", "false", "none"})
# Line breaks JSON leaves unescaped but str.splitlines() splits on: escaped so a row stays one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
_NUMERIC_START = frozenset("0123456789+-.iInN")  # how a text float() reads may begin
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


def result_text(structured: Mapping[str, Any]) -> str:
    """The text content of a tool result whose structured content is ``structured``."""
    table = _table(structured)
    if table is not None:
        return table
    try:
        return _json(structured)
    except (TypeError, ValueError):  # not plain JSON (NaN, another type): as the SDK would write it, compact
        return pydantic_core.to_json(structured, fallback=str, inf_nan_mode="null").decode().translate(_LINE_BREAKS)


def read_result_text(text: str) -> dict[str, Any]:
    """The structured content :func:`result_text` wrote ``text`` from.

    Raises:
        ValueError: ``text`` is not in the form :func:`result_text` writes.
    """
    if "\n" not in text:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError("a result's text is a JSON object or a table")
        return found
    meta_line, header, *lines = text.split("\n")
    structured = json.loads(meta_line)
    if not isinstance(structured, dict):
        raise ValueError("a table's first line is a JSON object")
    structured["columns"] = _cells(header)
    structured["rows"] = [_cells(line) for line in lines]
    return structured


def _table(structured: Mapping[str, Any]) -> str | None:
    """The table form of ``structured``, or None when it is not a table of JSON values."""
    columns, rows = structured.get("columns"), structured.get("rows")
    if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
        return None
    if not (isinstance(rows, list) and all(isinstance(r, list) and len(r) == len(columns) for r in rows)):
        return None
    strings: dict[str, str] = {}  # a column's values repeat (statuses, regions, dates); this result's only

    def cell(value: Any) -> str:
        if type(value) is str:
            written = strings.get(value)
            if written is None:
                written = strings[value] = _string_cell(value)
            return written
        return _cell(value)

    try:
        lines = [",".join(map(cell, row)) for row in [columns, *rows]]
        meta = _json({key: value for key, value in structured.items() if key not in ("columns", "rows")})
    except ValueError:  # a value JSON cannot hold (NaN, infinity, a non-JSON type): no table
        return None
    return "\n".join([meta, *lines])


def _cell(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _string_cell(value)
    if value is None:
        return ""
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"not a JSON number: {value}")
        return repr(value)  # what JSON writes: the shortest text that reads back as the same float
    if kind is list or kind is dict:
        return _json(value)
    raise ValueError(f"not a JSON value: {kind.__name__}")


def _string_cell(text: str) -> str:
    return text if _reads_bare(text) else _json(text)


def _reads_bare(text: str) -> bool:
    """True when ``text`` unquoted reads back as itself, and as plainly a string to a reader."""
    if not text or text != text.strip() or not text.isprintable():
        return False
    if "," in text or '"' in text or text[0] in "[{" or text.lower() in _WORDS:
        return False
    if text[0] not in _NUMERIC_START:
        return True
    try:
        float(text)  # 1e5, 0012, nan, inf: quoted, so that only numbers read as numbers
    except ValueError:
        return True
    return False


def _json(value: Any) -> str:
    return _ENCODER.encode(value).translate(_LINE_BREAKS)


def _cells(line: str) -> list[Any]:
    """The values of one line of a table: see the module's docstring for how a cell reads."""
    cells: list[Any] = []
    at = 0
    while True:
        if at < len(line) and line[at] in '"[{':
            value, at = _DECODER.raw_decode(line, at)
            cells.append(value)
        else:
            end = line.find(",", at)
            end = len(line) if end < 0 else end
            cells.append(_bare(line[at:end]))
            at = end
        if at == len(line):
            return cells
        if line[at] != ",":
            raise ValueError(f"expected ',' after a cell at column {at + 1} of {line[:80]!r}")
        at += 1


def _bare(text: str) -> Any:
    if not text:
        return None
    if text in ("true", "false"):
        return text == "true"
    number = _NUMBER.match(text)
    if number is None:
        return text
    return float(text) if number.group(1) or number.group(2) else int(text)
