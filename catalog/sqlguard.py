"""The SQL guard behind ``run_sql``: one read-only SELECT over product names, governed like every read.

:func:`parse_product_sql` parses the agent's text with sqlglot and refuses, with a message that says
why and what is allowed, anything but one query (SELECT, CTEs, UNION/INTERSECT/EXCEPT) built from an
**allow-list** of syntax nodes, functions and cast types over tables named ``<domain>.<product>`` (or
CTEs in scope). Everything else — writes, DDL, COPY/PRAGMA/SET/ATTACH/CALL/EXPORT, table functions,
functions that read files, sleep or look at the server, system catalogs, ``SELECT … INTO``, locking
clauses, parameters — is refused because it is not on the list.

:func:`rewrite_sql` then replaces each product reference with its governed source
(:func:`catalog.compile.governed_source`: masks, row filters and an optimisation fence), keeps the
agent's alias (or assigns the product's short name, so ``orders.amount`` still resolves), checks
that referenced columns exist, quotes column references (so bare words such as ``user`` cannot reach a
server function) and caps the outer ``LIMIT`` at ``max_rows + 1``. The connector renders the returned
AST in its own dialect, which transpiles the agent's generic SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from catalog._sqlbuild import unknown_column_message
from catalog.compile import governed_source, source_alias
from catalog.contract import PRODUCT_NAME
from catalog.errors import InvalidRequestError, SQLRefusedError
from catalog.policy import GovernedView
from catalog.query import Limits

__all__ = ["ALLOWED", "ParsedSQL", "connection_of", "parse_product_sql", "rewrite_sql"]

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


def _classes(names: str) -> frozenset[type[exp.Expr]]:
    return frozenset(c for n in names.split() if isinstance(c := getattr(exp, n, None), type))


def _function_name(kind: type[exp.Func]) -> str:
    return (kind.sql_names() or [kind.__name__])[0].lower()


_ALLOWED_NODES = _classes(_NODES)
_ALLOWED_FUNCTIONS = frozenset(c for c in _classes(_FUNCTIONS) if issubclass(c, exp.Func))
_ALLOWED_TYPES = frozenset(getattr(exp.DataType.Type, n) for n in _TYPES.split())
_FUNCTION_NAMES = ", ".join(sorted({_function_name(c) for c in _ALLOWED_FUNCTIONS}))
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "main", "temp", "system", "sqlite_master"})
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
_TABLE_ARGS = frozenset({"this", "db", "catalog", "alias"})


@dataclass(frozen=True)
class ParsedSQL:
    """A statement that passed the guard: the parsed query and the products it reads (sorted, unique)."""

    sql: str
    statement: exp.Query
    products: list[str]


def parse_product_sql(sql: str, *, read: str | None = None) -> ParsedSQL:
    """Parse ``sql`` (generic SQL unless ``read`` names a sqlglot dialect) and check it against the guard.

    Raises:
        SQLRefusedError: not exactly one SELECT; a statement that writes or configures; syntax,
            a function or a cast type outside the allow-list; a table that is not ``domain.product``
            or a CTE in scope (system catalogs included). The message says why and what is allowed.
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=read) if s is not None]
    except (ParseError, SqlglotError) as exc:
        raise SQLRefusedError(f"could not parse the SQL ({_first_error(exc)}). {ALLOWED}") from exc
    if len(statements) != 1:
        raise SQLRefusedError(f"expected exactly one statement, got {len(statements)}. {ALLOWED}")
    (statement,) = statements
    if not isinstance(statement, exp.Select | exp.SetOperation):
        kind = statement.name.upper() if isinstance(statement, exp.Command) else type(statement).__name__.upper()
        raise SQLRefusedError(f"{kind or 'this'} statements are not allowed; {ALLOWED}")
    products: set[str] = set()
    for node in statement.walk():
        _check_node(node)
        if isinstance(node, exp.Table):
            name = _table_product(node)
            if name is not None:
                products.add(name)
    if not products:
        raise SQLRefusedError(f"the query reads no product. {ALLOWED}")
    return ParsedSQL(sql=sql, statement=statement, products=sorted(products))


def _first_error(exc: SqlglotError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return str(errors[0].get("description", exc))
    return str(exc).splitlines()[0]


def _check_node(node: exp.Expr) -> None:
    kind = type(node)
    if kind in _ALLOWED_NODES or kind in _ALLOWED_FUNCTIONS:
        if isinstance(node, exp.DataType) and node.this not in _ALLOWED_TYPES:
            raise SQLRefusedError(f"cast to type {node.sql()!r} is not allowed; cast to {_type_names()}")
        return
    for refused, reason in _REFUSED_NODES.items():
        if isinstance(node, refused):
            raise SQLRefusedError(f"{reason}. {ALLOWED}")
    if isinstance(node, exp.Func):
        name = node.name.lower() if isinstance(node, exp.Anonymous) else _function_name(type(node))
        raise SQLRefusedError(f"function {name}() is not allowed. Allowed functions: {_FUNCTION_NAMES}")
    if isinstance(node, exp.DML | exp.DDL | exp.Command):
        raise SQLRefusedError(f"{kind.__name__.upper()} is not allowed anywhere in the query. {ALLOWED}")
    raise SQLRefusedError(f"{node.sql()!r} ({kind.__name__}) is not allowed. {ALLOWED}")


def _type_names() -> str:
    return ", ".join(t.value.lower() for t in sorted(_ALLOWED_TYPES, key=lambda t: t.value))


def _table_product(table: exp.Table) -> str | None:
    """The product a table node reads, or None for a CTE in scope.

    Raises:
        SQLRefusedError: a table function, a modifier, a system catalog or a name that is not a product.
    """
    if not isinstance(table.this, exp.Identifier):
        raise SQLRefusedError(f"table functions such as {table.this.sql()} are not allowed; read products by name")
    extra = sorted(k for k, v in table.args.items() if v and k not in _TABLE_ARGS)
    if extra:
        raise SQLRefusedError(f"table modifiers ({', '.join(extra)}) are not allowed on {table.sql()}")
    if table.catalog:
        raise SQLRefusedError(f"{table.sql()!r}: name products as domain.product, e.g. sales.orders")
    if not table.db:
        if table.name.lower() in _visible_ctes(table):
            return None
        raise SQLRefusedError(
            f"unknown table {table.name!r}: only products (domain.product, e.g. sales.orders) and CTEs "
            "defined earlier in the query can be read"
        )
    db = table.db.lower()
    name = f"{db}.{table.name.lower()}"
    if db in _SYSTEM_SCHEMAS or db.startswith(("pg_", "sqlite_", "duckdb_")):
        raise SQLRefusedError(f"{name!r} is a system catalog, not a product; read products such as sales.orders")
    if not re.match(PRODUCT_NAME, name):
        raise SQLRefusedError(f"{name!r} is not a product name; products are named domain.product")
    return name


def _visible_ctes(node: exp.Expr) -> set[str]:
    """CTE names a table reference at ``node`` resolves to, following SQL scoping.

    A CTE body sees the CTEs defined before it (and itself under ``WITH RECURSIVE``); a query body sees
    all of its CTEs; nested queries see their ancestors' CTEs. Anything else would resolve to a real
    table of the store, so it is not treated as a CTE.
    """
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With) and isinstance(child, exp.CTE):
            ctes = parent.expressions
            index = next(i for i, cte in enumerate(ctes) if cte is child)
            names |= {cte.alias_or_name.lower() for cte in ctes[:index]}
            if parent.args.get("recursive"):
                names.add(child.alias_or_name.lower())
        elif isinstance(parent, exp.Query) and child is not parent.args.get("with_"):
            with_ = parent.args.get("with_")
            if isinstance(with_, exp.With):
                names |= {cte.alias_or_name.lower() for cte in with_.expressions}
        child, parent = parent, parent.parent
    return names


def connection_of(views: Mapping[str, GovernedView]) -> str:
    """The one connection all products of a statement live on.

    Raises:
        InvalidRequestError: the products live on different connections (or there are none).
    """
    connections = {v.contract.source.connection for v in views.values()}
    if len(connections) != 1:
        raise InvalidRequestError(
            f"products {sorted(views)} live on different connections ({sorted(connections)}); one statement "
            "can only combine products of one connection — query them separately"
        )
    return connections.pop()


def rewrite_sql(
    parsed: ParsedSQL, views: Mapping[str, GovernedView], *, dialect: str, hash_salt: str, limits: Limits
) -> exp.Query:
    """The statement with each product replaced by its governed source and an outer ``LIMIT max_rows+1``.

    Raises:
        InvalidRequestError: a product has no view (the caller must govern each of ``parsed.products``),
            or a column reference names no column of the products (close match suggested).
        SQLRefusedError: the outer LIMIT/OFFSET is not an integer literal.
    """
    missing = [p for p in parsed.products if p not in views]
    if missing:
        raise InvalidRequestError(f"no governed view for {missing}")
    statement = parsed.statement.copy()
    references: list[tuple[exp.Table, GovernedView, str]] = []
    for table in list(statement.find_all(exp.Table)):
        name = _table_product(table)
        if name is not None:
            view = views[name]
            alias = table.alias or source_alias(view)
            references.append((table, view, alias))
    _check_columns(statement, references)
    for table, view, _ in references:
        given = table.args.get("alias")
        source = governed_source(
            view,
            dialect=dialect,
            hash_salt=hash_salt,
            alias=given.copy() if isinstance(given, exp.TableAlias) else None,
            fence=bool(view.row_filters),
        )
        table.replace(source)
    return _cap_limit(statement, limits.max_rows + 1)


def _check_columns(statement: exp.Query, references: list[tuple[exp.Table, GovernedView, str]]) -> None:
    """Resolve column references against the products; quote them so they can only mean a column."""
    by_alias = {alias.lower(): view for _, view, alias in references}
    by_product: dict[str, set[str]] = {}
    for _, view, alias in references:
        by_product.setdefault(view.name, set()).add(alias)
    product_columns = list(dict.fromkeys(c for _, view, _ in references for c in view.columns))
    folded = {c.lower(): c for c in product_columns}
    defined = {a.alias.lower() for a in statement.find_all(exp.Alias)}
    defined |= {i.name.lower() for t in statement.find_all(exp.TableAlias) for i in t.columns}
    for column in list(statement.find_all(exp.Column)):
        ident = column.this
        if not isinstance(ident, exp.Identifier):
            continue  # alias.* — a Star
        if column.args.get("db"):
            product = f"{column.db.lower()}.{column.table.lower()}"
            aliases: set[str] = by_product.get(product, set())
            if len(aliases) != 1:
                raise InvalidRequestError(
                    f"{column.sql()!r}: {product} is not read exactly once here; qualify columns with its alias"
                )
            column.set("db", None)
            column.set("table", exp.to_identifier(next(iter(aliases))))
        name = ident.name
        owner = by_alias.get(column.table.lower()) if column.table else None
        if owner is not None and name.lower() not in {c.lower() for c in owner.columns} and name.lower() not in defined:
            raise InvalidRequestError(
                unknown_column_message(name, owner.columns, where=f"{owner.name} ({column.table})")
            )
        if name.lower() not in folded and name.lower() not in defined:
            raise InvalidRequestError(unknown_column_message(name, product_columns))
        if not ident.quoted:
            canonical = folded.get(name.lower(), name.lower())
            column.set("this", exp.to_identifier(canonical, quoted=True))


def _cap_limit(statement: exp.Query, cap: int) -> exp.Query:
    limit = statement.args.get("limit")
    if limit is not None:
        value = limit.expression if isinstance(limit, exp.Limit) else None
        if not (isinstance(value, exp.Literal) and value.is_int):
            raise SQLRefusedError("the outer LIMIT must be an integer literal, e.g. LIMIT 100")
        cap = min(cap, int(value.name))
    offset = statement.args.get("offset")
    if offset is not None:
        value = offset.expression if isinstance(offset, exp.Offset) else None
        if not (isinstance(value, exp.Literal) and value.is_int):
            raise SQLRefusedError("the outer OFFSET must be an integer literal, e.g. OFFSET 100")
    return statement.limit(cap, copy=False)
