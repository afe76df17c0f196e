"""What a ``run_sql`` statement may be made of: allow-lists of nodes, functions, types and payloads.

:func:`check_node` is called on every node of a parsed statement. A node passes only when its type
is on an allow-list **and** every plain value it carries — the text sqlglot prints back verbatim
(a number literal, an unquoted identifier, a date part, a window frame keyword, a join kind, a JSON
path key) — is one we vouch for: a number that reads as a number, a name that reads as a name, a
word from a fixed list. Values that fail are refused, and those from a fixed list are rewritten in
our own spelling, so the statement a store runs is printed from nodes and words we allow.

Quoted identifiers and string literals are printed by sqlglot with their quote characters escaped,
so they can carry any text; NUL is refused before parsing (:mod:`catalog.sqlguard`).
"""

from __future__ import annotations

import re

from sqlglot import exp

from catalog.errors import SQLRefusedError

__all__ = ["ALLOWED", "check_node", "function_name"]

ALLOWED = (
    "run_sql accepts exactly one SELECT (joins, subqueries, CTEs, UNION/INTERSECT/EXCEPT, GROUP BY, window "
    "functions) that reads products by name, e.g. SELECT region, count(*) FROM sales.orders GROUP BY region"
)

_NODES = """Select Union Except Intersect Subquery With CTE TableAlias Table Identifier Column Star Alias Literal
Boolean Null From Join Where Group Having Order Ordered Limit Offset Distinct Paren Not Neg In Between Is Like ILike
Escape Add Sub Mul Div IntDiv Mod EQ NEQ GT GTE LT LTE And Or DPipe NullSafeEQ NullSafeNEQ Case Window WindowSpec
Interval Var DataType DataTypeParam Tuple Exists Any All Filter Qualify Rollup Cube GroupingSets JSONPath JSONPathRoot
JSONPathKey JSONPathSubscript IgnoreNulls RespectNulls"""

_FUNCTIONS = """Count Sum Avg Min Max Stddev StddevPop StddevSamp Variance VariancePop ApproxDistinct Median
PercentileCont PercentileDisc Quantile GroupConcat CountIf LogicalAnd LogicalOr Corr CovarPop CovarSamp AnyValue
RowNumber Rank DenseRank PercentRank CumeDist Ntile Lag Lead FirstValue LastValue NthValue
If Coalesce Nullif Greatest Least Cast TryCast Abs Ceil Floor Round Sqrt Exp Ln Log Pow Sign
Upper Lower Length Substring Trim Replace Concat ConcatWs StrPosition Left Right Pad Reverse Initcap RegexpLike
RegexpExtract RegexpReplace SplitPart CurrentDate CurrentTimestamp DateTrunc TimestampTrunc Extract DateAdd DateSub
DateDiff TsOrDsToDate TsOrDsAdd StrToDate StrToTime TimeToStr TimeStrToTime UnixToTime TimeToUnix DateFromParts Day
Month Year Quarter Week DayOfWeek DayOfMonth DayOfYear WeekOfYear LastDay DateStrToDate JSONExtract
JSONExtractScalar"""

_TYPES = """TEXT VARCHAR CHAR NCHAR NVARCHAR INT BIGINT SMALLINT TINYINT DECIMAL DOUBLE FLOAT BOOLEAN DATE TIMESTAMP
TIMESTAMPTZ TIME INTERVAL"""

#: Date and time parts (EXTRACT, INTERVAL, DATE_ADD/DATE_DIFF units), in the spelling we print.
_DATE_PARTS = {
    **{p: p for p in "YEAR QUARTER MONTH WEEK DAY HOUR MINUTE SECOND MILLISECOND MICROSECOND EPOCH".split()},
    **{f"{p}S": p for p in "YEAR QUARTER MONTH WEEK DAY HOUR MINUTE SECOND MILLISECOND MICROSECOND".split()},
    **{p: p for p in "DOW DOY ISODOW ISOYEAR DECADE CENTURY MILLENNIUM".split()},
    "DAYOFWEEK": "DOW",
    "DAYOFYEAR": "DOY",
    "WEEKDAY": "DOW",
}
#: Where a date part may stand: (parent node type, argument name).
_DATE_PART_PLACES = {
    (exp.Extract, "this"),
    (exp.Interval, "unit"),
    (exp.DateAdd, "unit"),
    (exp.DateSub, "unit"),
    (exp.DateDiff, "unit"),
    (exp.TsOrDsAdd, "unit"),
    (exp.DateTrunc, "unit"),
    (exp.TimestampTrunc, "unit"),
}
#: Plain words some nodes carry as arguments, and the words they may be.
_WORDS: dict[tuple[type[exp.Expr], str], frozenset[str]] = {
    (exp.WindowSpec, "kind"): frozenset({"ROWS", "RANGE", "GROUPS"}),
    (exp.WindowSpec, "start"): frozenset({"UNBOUNDED", "CURRENT ROW"}),
    (exp.WindowSpec, "end"): frozenset({"UNBOUNDED", "CURRENT ROW"}),
    (exp.WindowSpec, "start_side"): frozenset({"PRECEDING", "FOLLOWING"}),
    (exp.WindowSpec, "end_side"): frozenset({"PRECEDING", "FOLLOWING"}),
    (exp.Window, "over"): frozenset({"OVER"}),
    (exp.Join, "side"): frozenset({"LEFT", "RIGHT", "FULL"}),
    (exp.Join, "kind"): frozenset({"INNER", "OUTER", "CROSS"}),
    (exp.Trim, "position"): frozenset({"BOTH", "LEADING", "TRAILING"}),
}
_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_KEY = re.compile(r"^[A-Za-z0-9_ -]{1,128}$")


def _classes(names: str) -> frozenset[type[exp.Expr]]:
    return frozenset(c for n in names.split() if isinstance(c := getattr(exp, n, None), type))


def function_name(kind: type[exp.Func]) -> str:
    """The name SQL spells a function by (``count``, ``date_trunc``)."""
    return (kind.sql_names() or [kind.__name__])[0].lower()


_ALLOWED_NODES = _classes(_NODES)
_ALLOWED_FUNCTIONS = frozenset(c for c in _classes(_FUNCTIONS) if issubclass(c, exp.Func))
_ALLOWED_TYPES = frozenset(getattr(exp.DataType.Type, n) for n in _TYPES.split())
_FUNCTION_NAMES = ", ".join(sorted({function_name(c) for c in _ALLOWED_FUNCTIONS}))
_TYPE_NAMES = ", ".join(sorted(t.value.lower() for t in _ALLOWED_TYPES))
_REFUSED_NODES: dict[type[exp.Expr], str] = {
    exp.Into: "SELECT ... INTO writes a table",
    exp.Lock: "locking clauses (FOR UPDATE / FOR SHARE) are not allowed on a read-only connection",
    exp.Fetch: "FETCH FIRST is not supported; use LIMIT n",
    exp.Placeholder: "parameters are not supported; write the values into the query",
    exp.Parameter: "parameters and session variables are not allowed",
    exp.Values: "VALUES lists are not allowed; read products only",
    exp.Unnest: "UNNEST is not allowed; read products only",
    exp.Lateral: "LATERAL is not allowed",
    exp.Dot: "nested field access (a.b.c.d) is not allowed; write alias.column",
}


def check_node(node: exp.Expr) -> None:
    """Refuse ``node`` unless its type and every plain value it carries are allowed (see the module doc).

    Date parts are rewritten in place to our spelling; unquoted names that are not plain words are
    quoted.

    Raises:
        SQLRefusedError: what is not allowed, and what is.
    """
    kind = type(node)
    if kind not in _ALLOWED_NODES and kind not in _ALLOWED_FUNCTIONS:
        _refuse_type(node)
    if isinstance(node, exp.DataType):
        _check_data_type(node)
    for key in ("unit", "this") if isinstance(node, exp.Extract) else ("unit",):
        part = node.args.get(key)
        if part is not None and (key == "unit" or isinstance(node, exp.Extract)):
            node.set(key, _date_part_node(part))
    for key, value in node.args.items():
        if value is None or isinstance(value, bool | exp.Expr):
            continue
        if isinstance(value, list):
            if all(isinstance(v, exp.Expr) for v in value):
                continue
            raise SQLRefusedError(f"unsupported syntax in {kind.__name__.lower()}. {ALLOWED}")
        _check_payload(node, key, value)


def _refuse_type(node: exp.Expr) -> None:
    kind = type(node)
    for refused, reason in _REFUSED_NODES.items():
        if isinstance(node, refused):
            raise SQLRefusedError(f"{reason}. {ALLOWED}")
    if isinstance(node, exp.Anonymous):
        name = node.name if _BARE_NAME.match(node.name) else "this"
        raise SQLRefusedError(f"function {name.lower()}() is not allowed. Allowed functions: {_FUNCTION_NAMES}")
    if isinstance(node, exp.Func):
        raise SQLRefusedError(
            f"function {function_name(type(node))}() is not allowed. Allowed functions: {_FUNCTION_NAMES}"
        )
    if isinstance(node, exp.DML | exp.DDL | exp.Command):
        raise SQLRefusedError(f"{kind.__name__.upper()} is not allowed anywhere in the query. {ALLOWED}")
    raise SQLRefusedError(f"{kind.__name__} syntax is not allowed. {ALLOWED}")


def _check_payload(node: exp.Expr, key: str, value: object) -> None:
    """One plain (non-node) argument of ``node``: vouch for it, or refuse the statement."""
    if isinstance(node, exp.Literal) and key == "this":
        if node.is_string:
            return  # printed quoted, quotes escaped
        if isinstance(value, int) or (isinstance(value, str) and _NUMBER.match(value)):
            return
        raise SQLRefusedError("a number literal must be written as digits, e.g. 42, 3.5 or 1e6")
    if isinstance(node, exp.Identifier) and key == "this" and isinstance(value, str):
        if not node.quoted and not _BARE_NAME.match(value):
            node.set("quoted", True)
        return
    if isinstance(node, exp.Var) and key == "this" and isinstance(value, str):
        _check_date_part(node, value)
        return
    if isinstance(node, exp.DataType) and key == "this":
        if value not in _ALLOWED_TYPES:
            name = value.value.lower() if isinstance(value, exp.DataType.Type) else "this type"
            kind = node.args.get("kind")
            if isinstance(kind, exp.Expr):
                kind = kind.name
            if value == exp.DataType.Type.USERDEFINED and isinstance(kind, str) and _BARE_NAME.match(kind):
                name = kind.lower()
            raise SQLRefusedError(f"cast to type {name!r} is not allowed; cast to {_TYPE_NAMES}")
        return
    if isinstance(node, exp.JSONPathKey) and key == "this" and isinstance(value, str):
        if _JSON_KEY.match(value):
            return
        raise SQLRefusedError("JSON path keys may hold letters, digits, '_', '-' and spaces only")
    if isinstance(node, exp.JSONPathSubscript) and key == "this" and isinstance(value, int):
        return
    words = _WORDS.get((type(node), key))
    if words is not None and isinstance(value, str) and value.upper() in words:
        node.set(key, value.upper())
        return
    raise SQLRefusedError(f"unsupported syntax in {type(node).__name__.lower()}. {ALLOWED}")


def _date_part_node(part: exp.Expr) -> exp.Expr:
    """A date part (``unit`` of DATE_TRUNC/DATE_ADD/INTERVAL…, the part of EXTRACT) in our spelling.

    Dialects print some of these as bare words (a string literal unit can become a ``Var``), so only
    a word from the fixed list may stand here, whatever node carried it.
    """
    if isinstance(part, exp.Var | exp.Column) or (isinstance(part, exp.Literal) and part.is_string):
        canonical = _DATE_PARTS.get(part.name.upper()) if part.name else None
        if canonical is not None:
            return exp.Literal.string(canonical) if isinstance(part, exp.Literal) else exp.var(canonical)
        raise SQLRefusedError(f"unknown date part; use one of {', '.join(sorted(set(_DATE_PARTS.values())))}")
    raise SQLRefusedError("a date part must be a word such as day, month or year")


def _check_date_part(node: exp.Var, value: str) -> None:
    parent = node.parent
    if parent is None or (type(parent), node.arg_key) not in _DATE_PART_PLACES:
        raise SQLRefusedError(f'a bare word is not allowed here; quote names as "name". {ALLOWED}')
    part = _DATE_PARTS.get(value.upper())
    if part is None:
        raise SQLRefusedError(f"unknown date part; use one of {', '.join(sorted(set(_DATE_PARTS.values())))}")
    node.set("this", part)


def _check_data_type(node: exp.DataType) -> None:
    """A cast type: an allowed type with at most integer parameters (``VARCHAR(20)``, ``DECIMAL(10, 2)``)."""
    for param in node.expressions:
        inner = param.this if isinstance(param, exp.DataTypeParam) else None
        if not (isinstance(inner, exp.Literal) and not inner.is_string and str(inner.this).isdigit()):
            raise SQLRefusedError(f"type parameters must be whole numbers, e.g. decimal(10, 2); cast to {_TYPE_NAMES}")
