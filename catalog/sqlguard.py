"""The SQL guard behind ``run_sql``: one read-only SELECT over product names, governed like every read.

:func:`parse_product_sql` parses the agent's text with sqlglot and refuses, with a message that says
why and what is allowed, anything but one query (SELECT, CTEs, UNION/INTERSECT/EXCEPT) built from an
**allow-list** of syntax nodes, functions and cast types over tables named ``<domain>.<product>`` (or
CTEs in scope). Everything else — writes, DDL, COPY/PRAGMA/SET/ATTACH/CALL/EXPORT, table functions,
functions that read files, sleep or look at the server, system catalogs, ``SELECT … INTO``, locking
clauses, parameters — is refused because it is not on the list.

:func:`rewrite_sql` then replaces each product reference with its governed source
(:func:`catalog.governed_source.governed_source`: masks, row filters and an optimisation fence), keeps the
agent's alias (or assigns the product's short name, so ``orders.amount`` still resolves), checks
that referenced columns exist, quotes column references (so bare words such as ``user`` cannot reach a
server function) and caps the outer ``LIMIT`` at ``max_rows + 1``. Products with columns aggregate-only for the caller
are read only in the shape :mod:`catalog._sqlaggonly` enforces (aggregates over groups of a minimum
size). The connector renders the returned
AST in its own dialect, which transpiles the agent's generic SQL.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from catalog._sqlaggonly import enforce_aggregate_only
from catalog._sqlallow import ALLOWED, check_node, function_name
from catalog._sqlbuild import unknown_column_message
from catalog.contract import PRODUCT_NAME
from catalog.errors import InvalidRequestError, SQLRefusedError
from catalog.governed_source import GOVERNED, SOURCE_ALIAS, GovernedMark, governed_source, source_alias
from catalog.policy import GovernedView
from catalog.query import Limits

__all__ = ["ALLOWED", "ParsedSQL", "connection_of", "parse_product_sql", "rewrite_sql"]

_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "main", "temp", "system", "sqlite_master"})
_TABLE_ARGS = frozenset({"this", "db", "catalog", "alias"})
_BARE_WORD = re.compile(r"^[A-Z_]{1,32}$")
#: Expression-tree levels one level of SQL nesting may take (``(a + b) * c`` is a few nodes deep).
_NODES_PER_LEVEL = 4
#: Parentheses, and what hides them: string literals, quoted names, comments.
_LEXEMES = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|`[^`]*`?|--[^\n]*|/\*.*?(?:\*/|$)|[()]", re.DOTALL)


@dataclass(frozen=True)
class ParsedSQL:
    """A statement that passed the guard: the parsed query and the products it reads (sorted, unique)."""

    sql: str
    statement: exp.Query
    products: list[str]


def parse_product_sql(sql: str, *, read: str | None = None, limits: Limits | None = None) -> ParsedSQL:
    """Parse ``sql`` (generic SQL unless ``read`` names a sqlglot dialect) and check it against the guard.

    Text longer than ``limits.max_sql_chars`` or nested deeper than ``limits.max_sql_depth`` is refused
    before (or, for nesting without parentheses, while) it is parsed, so no input can stall the parser.

    Raises:
        SQLRefusedError: too long or too deeply nested; not exactly one SELECT; a statement that writes
            or configures; syntax, a function, a cast type or a word outside the allow-lists; a table
            that is not ``domain.product`` or a CTE in scope (system catalogs included). The message
            says why and what is allowed.
    """
    limits = limits or Limits()
    _check_size(sql, limits)
    try:
        statements = [s for s in sqlglot.parse(sql, read=read) if s is not None]
    except (ParseError, SqlglotError) as exc:
        raise SQLRefusedError(f"could not parse the SQL ({_first_error(exc)}). {ALLOWED}") from exc
    except RecursionError as exc:
        raise SQLRefusedError(_too_deep(limits)) from exc
    if len(statements) != 1:
        raise SQLRefusedError(f"expected exactly one statement, got {len(statements)}. {ALLOWED}")
    (statement,) = statements
    if not isinstance(statement, exp.Select | exp.SetOperation):
        kind = statement.name.upper() if isinstance(statement, exp.Command) else type(statement).__name__.upper()
        if not _BARE_WORD.match(kind):
            kind = type(statement).__name__.upper()
        raise SQLRefusedError(f"{kind or 'this'} statements are not allowed; {ALLOWED}")
    products: set[str] = set()
    depth: dict[int, int] = {id(statement): 0}
    for node in statement.walk(bfs=True):
        level = depth[id(node)]
        if level > limits.max_sql_depth * _NODES_PER_LEVEL:
            raise SQLRefusedError(_too_deep(limits))
        check_node(node)  # may replace children (date parts): their depth is set after
        for child in node.iter_expressions():
            depth[id(child)] = level + 1
        if isinstance(node, exp.Table):
            name = _table_product(node)
            if name is not None:
                products.add(name)
    if not products:
        raise SQLRefusedError(f"the query reads no product. {ALLOWED}")
    return ParsedSQL(sql=sql, statement=statement, products=sorted(products))


def _check_size(sql: str, limits: Limits) -> None:
    """Refuse text too long, holding NUL, or nested deeper than the limit — in one linear scan."""
    if len(sql) > limits.max_sql_chars:
        raise SQLRefusedError(
            f"the SQL is {len(sql):,} characters long; at most {limits.max_sql_chars:,} are accepted — "
            "aggregate in SQL instead of listing values, or page with LIMIT/OFFSET"
        )
    if "\x00" in sql:
        raise SQLRefusedError("the SQL contains a NUL character")
    if _paren_depth(sql) > limits.max_sql_depth:
        raise SQLRefusedError(_too_deep(limits))


def _paren_depth(sql: str) -> int:
    """The deepest parenthesis nesting outside string literals, quoted names and comments."""
    deepest = level = 0
    for token in _LEXEMES.finditer(sql):
        char = token.group()
        if char == "(":
            level += 1
            deepest = max(deepest, level)
        elif char == ")":
            level -= 1
    return deepest


def _too_deep(limits: Limits) -> str:
    return (
        f"the SQL is nested too deeply (at most {limits.max_sql_depth} levels of parentheses, subqueries "
        "or expressions); flatten it with CTEs (WITH name AS (...))"
    )


def _first_error(exc: SqlglotError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return str(errors[0].get("description", exc))
    return str(exc).splitlines()[0]


def _table_product(table: exp.Table) -> str | None:
    """The product a table node reads, or None for a CTE in scope.

    Raises:
        SQLRefusedError: a table function, a modifier, a system catalog or a name that is not a product.
    """
    if not isinstance(table.this, exp.Identifier):
        raise SQLRefusedError("table functions are not allowed; read products by name, e.g. FROM sales.orders")
    extra = sorted(k for k, v in table.args.items() if v and k not in _TABLE_ARGS)
    if extra:
        raise SQLRefusedError(f"table modifiers ({', '.join(extra)}) are not allowed on {table.name!r}")
    if table.catalog:
        raise SQLRefusedError(f"{_dotted(table)!r}: name products as domain.product, e.g. sales.orders")
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


def _dotted(node: exp.Table | exp.Column) -> str:
    return ".".join(part.name for part in node.parts)


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
    _name_outputs(statement)
    references: list[tuple[exp.Table, GovernedView, str]] = []
    for table in list(statement.find_all(exp.Table)):
        name = _table_product(table)
        if name is not None:
            view = views[name]
            alias = table.alias or source_alias(view)
            references.append((table, view, alias))
    _check_columns(statement, references)
    enforce_aggregate_only(statement, references)
    sources: list[exp.Subquery] = []
    for table, view, _ in references:
        given = table.args.get("alias")
        source = governed_source(
            view,
            dialect=dialect,
            hash_salt=hash_salt,
            alias=given.copy() if isinstance(given, exp.TableAlias) else None,
            fence=bool(view.row_filters),
        )
        sources.append(source)
        table.replace(source)
    _refuse_shadowing(statement, sources)
    statement = _cap_limit(statement, limits.max_rows + 1)
    _check_rendering(statement, dialect)
    return statement


def _check_rendering(statement: exp.Query, dialect: str) -> None:
    """Render the statement as the store will receive it, parse that text back, and refuse it unless it
    reads the same tables the same number of times in the same number of SELECTs.

    A last check behind the allow-lists: text smuggled through anything printed verbatim would parse
    back as more SELECTs or more tables than the statement we built.
    """
    rendered = statement.sql(dialect=dialect)
    try:
        (echo,) = [s for s in sqlglot.parse(rendered, read=dialect) if s is not None]
    except (ParseError, SqlglotError, ValueError) as exc:
        raise SQLRefusedError(f"this statement cannot be rendered safely for the store. {ALLOWED}") from exc
    if _shape(echo) != _shape(statement):
        raise SQLRefusedError(f"this statement cannot be rendered safely for the store. {ALLOWED}")


def _shape(statement: exp.Expr) -> tuple[int, Counter[str]]:
    tables = Counter(".".join(p.name.lower() for p in t.parts) for t in statement.find_all(exp.Table))
    return sum(1 for _ in statement.find_all(exp.Select)), tables


def _name_outputs(statement: exp.Query) -> None:
    """Name every unnamed output of every SELECT of the caller's, so no store names a column after
    the expression it computed — which, once rewritten, holds governed sources (masks, salt, filters).

    A column keeps its name, an allowed function is named after itself (``count``, ``sum``), anything
    else by position (``col_3``).
    """
    for select in list(statement.find_all(exp.Select)):
        for position, projection in enumerate(list(select.expressions), start=1):
            if isinstance(projection, exp.Alias | exp.Column | exp.Star):
                continue
            # niladic functions (CURRENT_DATE) are keywords: a column named after one confuses DuckDB
            if isinstance(projection, exp.Func) and not isinstance(projection, exp.Cast) and projection.args:
                name = function_name(type(projection))
            else:
                name = f"col_{position}"
            projection.replace(exp.alias_(projection.copy(), name, quoted=True))


def _refuse_shadowing(statement: exp.Query, sources: list[exp.Subquery]) -> None:
    """Refuse a CTE of the caller's named like anything a governed source reads (a table it names, its
    inner alias): CTEs are visible inside nested subqueries, so the name would resolve to the caller's
    rows instead of the store's."""
    taken = {SOURCE_ALIAS.lower()}
    for source in sources:
        mark = source.meta.get(GOVERNED)
        if isinstance(mark, GovernedMark):
            for name in mark.objects:
                taken |= {name.lower(), name.rsplit(".", 1)[-1].lower()}
    own = {id(node) for source in sources for node in source.walk()}
    for cte in statement.find_all(exp.CTE):
        if id(cte) in own:
            continue
        if cte.alias_or_name.lower() in taken:
            raise SQLRefusedError(
                f"the CTE name {cte.alias_or_name!r} is taken: the products this query reads use that name "
                f"themselves; rename the CTE (e.g. {cte.alias_or_name.lower()}_cte)"
            )


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
                    f"{_dotted(column)!r}: {product} is not read exactly once here; qualify columns with its alias"
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
