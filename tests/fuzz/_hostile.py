"""Statements that attack the guard rather than ask a question.

* :func:`hostile`: text that must be refused or, if accepted, stay governed — writes and DDL, several
  statements, functions and catalogs outside the allow-list, unqualified physical names, SQL smuggled
  in a cast's type parameter or a quoted name, the governed source's inner alias, placeholders,
  table-alias column lists, VALUES/LATERAL/dot access, odd whitespace and look-alike letters.
* :func:`deep`: nesting within the caps (parentheses, derived tables, NOT chains, scalar subqueries):
  it must run, and agree with the oracle, or be refused.
* :func:`beyond_cap`: nesting or length far past any sensible cap (hundreds of levels, hundreds of
  kilobytes): it must be refused, quickly.
* :func:`failing`: an expression that fails on every row after the first (SQLite raises it while rows
  are fetched): both sides fail, and the product path must say the statement failed, not the store.
* :func:`colliding_cte`: a CTE named like a table a governed source reads (or like the product's short
  name), shaped so that it would replace the store's rows if it shadowed the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.fuzz.schema import INT, TEXT

if TYPE_CHECKING:
    from tests.fuzz.grammar import Writer

__all__ = ["beyond_cap", "colliding_cte", "deep", "failing", "hostile"]

REFUSED_FUNCTIONS = (
    "md5(email)",
    "sha256(email)",
    "pg_read_file('/etc/passwd')",
    "read_csv('/etc/passwd')",
    "version()",
    "current_user",
    "sqlite_version()",
    "load_extension('x')",
    "pg_sleep(0.01)",
    "current_setting('search_path')",
    "typeof(email)",
    "printf('%s', email)",
    "format('%s', email)",
    "array_agg(email)",
    "getvariable('x')",
    "hash(email)",
    "row_to_json(c)",
    "quote(email)",
)
CATALOGS = (
    "sqlite_master",
    "sqlite_schema",
    "pg_catalog.pg_tables",
    "information_schema.columns",
    "duckdb_tables()",
    "main.customers",
    "temp.customers",
    "pg_class",
    "shop.customers.x",
    '"shop.customers"',
    "read_parquet('x.parquet')",
    "ѕhop.orders",
)
WRITES = (
    "DELETE FROM shop.orders",
    "UPDATE shop.customers SET email = 'x'",
    "INSERT INTO shop.orders VALUES (1)",
    "CREATE TABLE x AS SELECT * FROM shop.orders",
    "DROP TABLE customers",
    "ATTACH 'x.db' AS y",
    "PRAGMA table_info(customers)",
    "COPY shop.orders TO '/tmp/x'",
    "SET search_path = shop",
    "SELECT * INTO x FROM shop.orders",
    "SELECT * FROM shop.orders FOR UPDATE",
    "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x",
    "EXPLAIN SELECT * FROM shop.orders",
    "CALL x()",
    "VACUUM",
)
SPACES = ("\u00a0", "\u2028", "\x0c", "\x0b", "\u3000", "\t\n")


def hostile(w: Writer) -> str:
    product = w.pick(w.pool)
    name = w.product_name(product)
    column = w.pick(product.columns).name
    table = w.pick(sorted(product.physical))
    secret = w.pick(("email", "phone", "full_name", "reviewer_email", "region", "*"))
    form = w.n(0, 19)
    if form == 0:  # SQL smuggled in a type parameter, printed back raw by an unguarded generator
        kind = w.pick(("VARCHAR", "CHAR", "DECIMAL", "TEXT"))
        payload = f"1)) AS a, {secret} FROM {w.pick((table, table.upper()))} {w.pick(('--', '/*', ''))}"
        return f'SELECT CAST({column} AS {kind}("{payload}")) AS a FROM {name}'
    if form == 1:
        return f'SELECT "{w.pick((column, "x"))}"" FROM {table} --" FROM {name}'
    if form == 2:
        return f"SELECT {w.pick(REFUSED_FUNCTIONS)} FROM {name} AS c"
    if form == 3:
        return f"SELECT * FROM {w.pick(CATALOGS)}"
    if form == 4:
        return w.pick(WRITES)
    if form == 5:
        return f"SELECT {column} FROM {name}; SELECT {secret} FROM {table}"
    if form == 6:
        return f"SELECT {secret} FROM {w.pick((table, table.upper(), product.short))}"
    if form == 7:  # the governed source's inner alias, from outside it
        return w.pick(
            (
                f"SELECT _source.{column} FROM {name}",
                f'SELECT "_source".* FROM {name} AS "_source"',
                f"SELECT (SELECT MAX(_source.{column}) FROM {name}) AS x",
                f"SELECT x._source FROM {name} AS x",
            )
        )
    if form == 8:
        return f"SELECT {column} FROM {name} WHERE {column} = {w.pick(('?', '$1', ':id', '@x', '%s'))}"
    if form == 9:
        aliases = ", ".join(f"c{i}" for i in range(w.n(1, len(product.columns))))
        return f"SELECT * FROM {name} AS t({aliases})"
    if form == 10:
        return w.pick(
            (
                f"SELECT * FROM (VALUES (1, 'x')) AS v(a, b), {name}",
                f"SELECT * FROM {name} AS a, LATERAL (SELECT 1) AS l",
                f"SELECT a.b.c.d FROM {name} AS a",
                f"SELECT * FROM UNNEST([1, 2]) AS u, {name}",
            )
        )
    if form == 11:
        return f"SELECT{w.pick(SPACES)}{column}{w.pick(SPACES)}FROM{w.pick(SPACES)}{name}"
    if form == 12:
        return f"SEL\u200bECT {column} FROM {name}"
    if form == 13:  # a quoted name holding SQL
        return f'SELECT 1 AS "x"" FROM {table} --", {column} FROM {name}'
    if form == 14:
        return f"SELECT /* */ {column} /* */ FROM {name} /* unterminated"
    if form == 15:
        return f"SELECT {column} FROM {name} -- */ FROM {table}"
    if form == 16:
        return f"SELECT `{column}` FROM {name}"
    if form == 17:
        return f"SELECT {column} FROM {name} AS t WHERE t.{column} = t.{column} ORDER BY 99"
    if form == 18:
        return (
            f"SELECT CAST({column} AS {w.pick(('BLOB', 'JSON', 'BYTEA', 'UUID', 'INTERVAL', 'REGCLASS'))}) FROM {name}"
        )
    return f"SELECT {column} FROM {name} LIMIT {w.pick(('1 + 1', '(SELECT 1)', '-1', 'ALL', 'NULL'))}"


def deep(w: Writer) -> str:
    """Nesting within the caps: it must run and agree with the oracle, or be refused."""
    product = w.pick(w.pool)
    name = w.product_name(product)
    column = w.pick(product.columns).name
    levels = w.n(1, 40)
    form = w.n(0, 4)
    if form == 0:
        return f"SELECT {'(' * levels}{column}{')' * levels} AS x FROM {name}"
    if form == 1:
        inner = f"SELECT * FROM {name} AS a0"
        for i in range(1, min(levels, 14)):
            inner = f"SELECT * FROM ({inner}) AS a{i}"
        return f"{inner} LIMIT 10"
    if form == 2:
        return f"SELECT COUNT(*) AS n FROM {name} WHERE {'NOT ' * levels}({column} IS NULL)"
    if form == 3:
        inner = f"SELECT MAX({column}) FROM {name} AS a"
        for _ in range(min(levels, 10)):
            inner = f"SELECT ({inner})"
        return f"{inner} AS x"
    return f"SELECT COUNT(*) AS n FROM {name} WHERE {' + '.join(['1'] * levels)} > 0"


def beyond_cap(w: Writer) -> str:
    """Nesting or length far past any sensible cap: it must be refused, quickly."""
    product = w.pick(w.pool)
    name = w.product_name(product)
    column = w.pick(product.columns).name
    form = w.n(0, 6)
    if form == 0:
        levels = w.n(200, 3000)
        return f"SELECT {'(' * levels}{column}{')' * levels} AS x FROM {name}"
    if form == 1:
        return f"SELECT COUNT(*) AS n FROM {name} WHERE {'NOT ' * w.n(500, 2000)}{column} IS NULL"
    if form == 2:
        return f"SELECT {'- ' * w.n(500, 3000)}1 AS x FROM {name}"
    if form == 3:
        return f"SELECT COUNT(*) AS n FROM {name} WHERE {' + '.join(['1'] * w.n(600, 2000))} > 0"
    if form == 4:
        inner = f"SELECT * FROM {name} AS a0"
        for i in range(1, w.n(150, 300)):
            inner = f"SELECT * FROM ({inner}) AS a{i}"
        return inner
    if form == 5:
        values = ", ".join(str(i) for i in range(w.n(20_000, 30_000)))
        return f"SELECT COUNT(*) AS n FROM {name} WHERE {column} IN ({values})"
    return f"SELECT COUNT(*) AS n FROM {name} WHERE {column} = '{'x' * w.n(100_000, 200_000)}'"


def colliding_cte(w: Writer) -> str:
    """A CTE named like a table a governed source reads, or like the product: it must not shadow it."""
    w.tags.add("collision")
    product = w.pick(w.pool)
    w.pool = [product]
    table, columns = w.pick(sorted(product.physical.items()))
    name = w.pick((table, table.upper(), f'"{table}"', product.short))
    kinds = {c.name: c.type for c in product.columns}
    counter = next((c for c in columns if kinds.get(c) == INT), None)
    values = []
    for column in columns:
        kind = kinds.get(column, TEXT)
        if column == "region":
            values.append("'EU'")
        elif column == counter:
            samples = product.column(column).samples
            values.append(min(samples, key=lambda s: int(s.strip("()"))) if samples else "1")
        else:
            values.append(w.literal(kind, product.column(column).samples if column in kinds else ()))
    head = f"{name}({', '.join(columns)})"
    if counter is not None and w.chance(60):
        step = [f"{c} + 1" if c == counter else c for c in columns]
        bound = int(values[columns.index(counter)].strip("()")) + w.n(1, 4000)
        recurse = f"SELECT {', '.join(step)} FROM {name} WHERE {counter} < {bound}"
        return f"{head} AS (SELECT {', '.join(values)} UNION ALL {recurse})"
    return f"{head} AS (SELECT {', '.join(values)})"


def failing(w: Writer) -> str:
    """An integer overflow on every row but the one with the smallest key: a statement error on any store."""
    keyed = [p for p in w.pool if len(p.key) == 1 and p.column(p.key[0]).type == INT]
    if not keyed:  # no integer key to spare a row by: the overflow hits every row
        return f"SELECT ABS(-9223372036854775807 - 1) AS x FROM {w.product_name(w.pick(w.pool))}"
    product = w.pick(keyed)
    key = product.key[0]
    first = min((int(s.strip("()")) for s in product.column(key).samples), default=0)
    overflow = f"ABS(CASE WHEN {key} > {first} THEN -9223372036854775807 - 1 ELSE 1 END)"
    return f"SELECT {key}, {overflow} AS x FROM {w.product_name(product)}"
