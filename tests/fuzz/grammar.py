"""Hypothesis strategies that write ``run_sql`` statements over the demo products.

:func:`cases` draws a :class:`~tests.fuzz.harness.Case`: a principal and one statement. Statements are
built from typed expressions over the products in scope (int, num, text, time, bool), so most of
them run; the mix:

* SELECTs with projections (columns, ``*``, ``t.*``, arithmetic, CASE, casts to allowed types, string
  and date functions, scalar subqueries), WHERE (comparisons, IN lists and subqueries, EXISTS,
  BETWEEN, LIKE/ILIKE, IS [NOT] NULL / DISTINCT FROM, AND/OR/NOT), aggregates with GROUP BY/HAVING
  and FILTER, window functions with PARTITION BY/ORDER BY, DISTINCT;
* inner and left joins on the products' keys (self-joins included), aliases and no aliases,
  identifiers in any case and quoted, product names quoted and upper-cased, three-part column names;
* derived tables, CTEs (with column lists, chained), ``WITH RECURSIVE`` counters and walks over a
  product's key (bounded), and CTEs named like the tables a governed source reads (``collision``);
* UNION [ALL] / INTERSECT / EXCEPT; outer ORDER BY (positions) with LIMIT/OFFSET;
* comments (``--`` and ``/* */``, with quotes, ``*/`` and SQL in them) between tokens, odd unicode in
  literals and aliases, deep nesting (``deep`` within the caps, ``beyond-cap`` far past them), and
  hostile statements that must be refused, and statements that fail on every row after the first
  (:mod:`tests.fuzz._hostile`).

What is left out, so that product path and oracle agree on the same engine: LIMIT inside subqueries
or row-numbering windows without a total order (``ORDER BY`` the primary key instead), GROUP_CONCAT
and other order-dependent aggregates, CURRENT_TIMESTAMP outside comparisons, expressions that can
fail on some rows only (division is by ``NULLIF(x, 0)``, casts only widen or format), except the
``poison`` predicates, which fail exactly on rows a row filter hides: they must not fail for a
principal who cannot see those rows. SQLite lacks EXTRACT, DATE_TRUNC, LEFT/RIGHT, LPAD, REVERSE,
SPLIT_PART and STDDEV; PostgreSQL keeps the case of quoted names: both are honoured per store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import _hostile
from tests.fuzz.harness import Case
from tests.fuzz.schema import BOOL, INT, NUM, TEXT, TIME, Product, Profile

__all__ = ["cases", "statements"]

ODD = (  # odd text for string literals: quotes, wildcards, escapes, combining and invisible characters
    *("", "'", '"', "%", "_", "\\", "--", "/*", "*/", ";", "***", "NULL", "'; DROP TABLE customers; --"),
    *("ü", "ß", "İ", "ﬁ", "e\u0301", "😀", "𝔘", "Ω≈ç√", "\t", "\n", "\u00a0", "\u2028", "\u200b", "\u202e"),
    *("EU", "APAC"),
)
ALIASES = ("a", "b", "c", "o", "l", "t", "x", "s", "Tbl", "ü", "ä", '"Ω"', '"a b"', '"select"', '"😀"', '"x""y"')
OUTPUT_NAMES = ("n", "total", "v", "Value", "ü", '"Größe"', '"select"', '"a b"', "email", "region", "phone", "x1")
COMMENTS = ("", " x ", " */ ", " -- ", "'", '"', " DROP TABLE customers; ", " FROM customers ", "ü😀", " /* ")
PRINCIPALS = ((70, "ana"), (15, "sam"), (15, "cy"))
KINDS = (
    (44, "select"),
    (12, "cte"),
    (5, "recursive"),
    (10, "setop"),
    (4, "collision"),
    (7, "deep"),
    (8, "hostile"),
    (2, "beyond-cap"),
    (1, "failing"),
)
_CMP = ("=", "<>", "<", "<=", ">", ">=", "!=")


@functools.cache
def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


_TEXTS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6)


@dataclass
class Rel:
    """A FROM item: how to qualify its columns, its columns (name as written, type, literals), its key."""

    qual: str
    columns: list[tuple[str, str, tuple[str, ...]]]
    key: list[str]
    product: Product | None = None
    full: str | None = None  # the product's name when it has no alias (three-part column names)


@dataclass
class Query:
    sql: str
    outputs: list[tuple[str | None, str, tuple[str, ...]]]  # name (None: unnamed), type, literals
    key: list[str] = field(default_factory=list)  # output names that together are unique


@dataclass
class Scope:
    rels: list[Rel]
    outer: list[Rel] = field(default_factory=list)
    ctes: list[Rel] = field(default_factory=list)
    windows: bool = False


class Writer:
    """Writes one statement for one principal; every choice is a hypothesis draw."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any], profile: Profile) -> None:
        self.draw = draw
        self.p = profile
        self.tags: set[str] = set()
        self.used: set[str] = set()
        self.principal = self.weighted(PRINCIPALS)
        readable = sorted(profile.readable[self.principal])
        self.connection = self.pick(sorted({profile.product(n).connection for n in readable} or profile.connections))
        pool = [n for n in readable if profile.product(n).connection == self.connection]
        if not pool or self.chance(4):  # now and then a product the principal may not read
            pool = [p.name for p in profile.products if p.connection == self.connection]
        self.pool = [profile.product(n) for n in pool]

    # -- choices -------------------------------------------------------------------------------------

    def n(self, low: int, high: int) -> int:
        return int(self.draw(_integers(low, high)))

    def pick(self, items: Any) -> Any:
        return items[self.n(0, len(items) - 1)]

    def chance(self, percent: int) -> bool:
        return self.n(0, 99) >= 100 - percent  # shrinks towards "no"

    def weighted(self, options: tuple[tuple[int, Any], ...]) -> Any:
        roll = self.n(0, sum(w for w, _ in options) - 1)
        for weight, option in options:
            if roll < weight:
                return option
            roll -= weight
        raise AssertionError("unreachable")

    def sep(self) -> str:
        """A space, or now and then a comment where a space may stand."""
        if not self.chance(6):
            return " "
        self.tags.add("comment")
        text = self.pick(COMMENTS) + self.draw(_TEXTS).replace("\n", " ")
        if self.chance(50):
            return f" /*{text.replace('*/', '* /')}*/ "
        return f" --{text}\n"

    # -- names ---------------------------------------------------------------------------------------

    def alias(self) -> str:
        base = self.pick(ALIASES)
        name, i = base, 1
        while name.lower() in self.used:
            i += 1
            name = f'{base[:-1]}{i}"' if base.startswith('"') else f"{base}{i}"
        self.used.add(name.lower())
        return name

    def column_name(self, name: str) -> str:
        style = self.n(0, 9)
        if style == 6:
            return name.upper()
        if style == 7:
            return name.title()
        if style == 8:
            return f'"{name}"'
        if style == 9 and self.p.folds_quoted:
            self.tags.add("quoted-case")
            return f'"{name.title()}"'
        return name

    def product_name(self, product: Product) -> str:
        domain, short = product.name.split(".")
        style = self.n(0, 9)
        if style == 7:
            return product.name.upper()
        if style == 8:
            return f'"{domain}"."{short}"'
        if style == 9:
            return f'{domain}."{short}"' if not self.p.folds_quoted else f'"{domain.title()}".{short.upper()}'
        return product.name

    # -- literals and columns ------------------------------------------------------------------------

    def literal(self, kind: str, samples: tuple[str, ...] = ()) -> str:
        if samples and self.chance(70):
            return str(self.pick(samples))
        if kind == INT:
            return str(self.pick((0, 1, 2, 3, 5, 10, 42, 100, 1000, 100500, 104000)))
        if kind == NUM:
            return self.pick(("0.5", "1.0", "9.99", "12.50", "100", "(-1.25)", "0"))
        if kind == BOOL:
            return self.pick(("TRUE", "FALSE"))
        if kind == TIME:
            return self.pick(("CAST('2025-01-01' AS DATE)", "CAST('2024-06-30 12:00:00' AS TIMESTAMP)", "CURRENT_DATE"))
        if self.chance(30):
            self.tags.add("unicode")
            text = self.pick(ODD) + self.draw(_TEXTS)
        else:
            text = self.pick(("EU", "US", "x", "", "de", "Berlin", "***", "%a%"))
        return "'" + text.replace("'", "''") + "'"

    def columns_of(self, sc: Scope, kind: str | None = None, *, outer: bool = False) -> list[tuple[Rel, int]]:
        rels = sc.outer if outer else sc.rels
        return [(r, i) for r in rels for i, c in enumerate(r.columns) if kind is None or c[1] == kind]

    def ref(self, sc: Scope, rel: Rel, index: int) -> str:
        name, _, _ = rel.columns[index]
        written = self.column_name(name) if rel.product is not None else name
        ambiguous = sum(1 for r in sc.rels for c in r.columns if c[0].lower() == name.lower()) != 1
        if rel not in sc.rels or ambiguous or self.chance(60):
            if rel.full is not None and self.chance(10):
                return f"{rel.full}.{written}"
            return f"{rel.qual}.{written}"
        return written

    def column(self, sc: Scope, kind: str) -> tuple[str, tuple[str, ...]] | None:
        found = self.columns_of(sc, kind)
        if not found:
            return None
        rel, index = self.pick(found)
        return self.ref(sc, rel, index), rel.columns[index][2]

    # -- expressions ---------------------------------------------------------------------------------

    def expr(self, sc: Scope, kind: str, depth: int) -> str:
        if kind == BOOL:
            return self.cond(sc, depth)
        if depth <= 0 or self.chance(45):
            found = self.column(sc, kind)
            if found is not None and self.chance(75):
                return found[0]
            return self.literal(kind)
        d = depth - 1
        if sc.windows and self.chance(12):
            return self.window(sc, kind)
        form = self.n(0, 11)
        if form == 0:
            return f"CASE WHEN {self.cond(sc, d)} THEN {self.expr(sc, kind, d)} ELSE {self.expr(sc, kind, d)} END"
        if form == 1:
            return f"COALESCE({self.expr(sc, kind, d)}, {self.expr(sc, kind, d)})"
        if form == 2 and kind != TIME:
            return f"NULLIF({self.expr(sc, kind, d)}, {self.expr(sc, kind, d)})"
        if form == 3 and depth >= 2:
            return self.scalar_subquery(sc, kind, d)
        if form == 4:
            self.tags.add("deep")
            levels = self.n(1, 6)
            return "(" * levels + self.expr(sc, kind, d) + ")" * levels
        if form == 5 and kind != TEXT:
            return f"IF({self.cond(sc, d)}, {self.expr(sc, kind, d)}, {self.expr(sc, kind, d)})"
        return {INT: self.int_expr, NUM: self.num_expr, TEXT: self.text_expr, TIME: self.time_expr}[kind](sc, d)

    def int_expr(self, sc: Scope, d: int) -> str:
        a = functools.partial(self.expr, sc, INT, d)
        forms: list[Callable[[], str]] = [
            lambda: f"{a()} + {a()}",
            lambda: f"{a()} - {a()}",
            lambda: f"{a()} * {self.pick((2, 3, -1, 10))}",
            lambda: f"ABS({a()})",
            lambda: f"LENGTH({self.expr(sc, TEXT, d)})",
            lambda: f"CAST({self.expr(sc, NUM, d)} AS {self.pick(('INT', 'BIGINT', 'INTEGER'))})",
            lambda: f"CAST({self.cond(sc, d)} AS INT)",
            lambda: f"{a()} % {self.pick((2, 3, 7))}",
            lambda: f"STRPOS({self.expr(sc, TEXT, d)}, {self.literal(TEXT)})",
            lambda: f"DATEDIFF({self.expr(sc, TIME, d)}, {self.expr(sc, TIME, d)})",
            lambda: f"GREATEST({a()}, {a()})",
            lambda: f"SIGN({a()})",
        ]
        if self.p.rich:
            forms.append(lambda: f"EXTRACT({self.pick(('YEAR', 'MONTH', 'DAY', 'DOW'))} FROM {self.expr(sc, TIME, d)})")
        return self.pick(forms)()

    def num_expr(self, sc: Scope, d: int) -> str:
        a = functools.partial(self.expr, sc, NUM, d)
        forms: list[Callable[[], str]] = [
            lambda: self.expr(sc, INT, d),
            lambda: f"{a()} * {a()}",
            lambda: f"{a()} + {self.expr(sc, INT, d)}",
            lambda: f"{a()} / NULLIF({a()}, 0)",
            lambda: f"ROUND({a()})",
            lambda: f"ROUND(CAST({a()} AS DECIMAL(18, 4)), {self.n(0, 3)})",
            lambda: f"ABS({a()})",
            lambda: f"CAST({self.expr(sc, INT, d)} AS {self.pick(('DECIMAL(10, 2)', 'DOUBLE', 'FLOAT'))})",
            lambda: f"{self.pick(('CEIL', 'FLOOR'))}({a()})",
        ]
        return self.pick(forms)()

    def text_expr(self, sc: Scope, d: int) -> str:
        a = functools.partial(self.expr, sc, TEXT, d)
        forms: list[Callable[[], str]] = [
            lambda: f"{self.pick(('UPPER', 'LOWER', 'TRIM'))}({a()})",
            lambda: f"SUBSTRING({a()}, {self.n(1, 12)}, {self.n(0, 8)})",
            lambda: f"REPLACE({a()}, {self.literal(TEXT)}, {self.literal(TEXT)})",
            lambda: f"{a()} || {a()}",
            lambda: f"CONCAT({a()}, {a()})",
            lambda: f"CAST({self.expr(sc, self.pick((INT, NUM, TIME)), d)} AS {self.pick(('TEXT', 'VARCHAR'))})",
            lambda: f"CAST({a()} AS VARCHAR({self.n(1, 12)}))",
        ]
        if self.p.rich:
            forms += [
                lambda: f"{self.pick(('LEFT', 'RIGHT'))}({a()}, {self.n(0, 6)})",
                lambda: f"LPAD({a()}, {self.n(0, 12)}, 'x')",
                lambda: f"REVERSE({a()})",
                lambda: f"SPLIT_PART({a()}, {self.pick(('.', '@', ' '))!r}, {self.n(1, 3)})",
            ]
        return self.pick(forms)()

    def time_expr(self, sc: Scope, d: int) -> str:
        a = functools.partial(self.expr, sc, TIME, d)
        forms: list[Callable[[], str]] = [
            lambda: f"CAST({a()} AS DATE)",
            lambda: f"DATE_ADD({a()}, INTERVAL {self.n(-40, 40)} DAY)",
        ]
        if self.p.rich:
            forms.append(lambda: f"DATE_TRUNC({self.pick(('month', 'day', 'year', 'week'))!r}, {a()})")
        return self.pick(forms)()

    def cond(self, sc: Scope, depth: int) -> str:
        d = depth - 1
        form = self.n(0, 14) if depth > 0 else self.n(0, 4)
        kind = self.pick((INT, NUM, TEXT, TIME, INT, TEXT))
        found = self.column(sc, kind)
        left, samples = found if found is not None else (self.expr(sc, kind, d), ())
        if form == 0:
            return f"{left} {self.pick(_CMP)} {self.literal(kind, samples)}"
        if form == 1:
            return f"{left} IS {self.pick(('', 'NOT '))}NULL"
        if form == 2:
            values = ", ".join(self.literal(kind, samples) for _ in range(self.n(1, 4)))
            return f"{left} {self.pick(('', 'NOT '))}IN ({values})"
        if form == 3:
            return f"{left} BETWEEN {self.literal(kind, samples)} AND {self.literal(kind, samples)}"
        if form == 4:
            bools = self.column(sc, BOOL)
            if bools is not None:
                return self.pick((bools[0], f"NOT {bools[0]}", f"{bools[0]} = TRUE"))
            return f"{left} = {left}"
        if form == 5:
            text = self.column(sc, TEXT)
            target = text[0] if text is not None else self.expr(sc, TEXT, d)
            pattern = self.pick(("%", "_", "a%", "%@example.org", "%EU%", "%5%", "***%", "%\\_%"))
            if text is not None and text[1] and self.chance(50):
                pattern = "%" + text[1][self.n(0, len(text[1]) - 1)].strip("'")[2:6] + "%"
            if self.chance(25):  # backtracking engines take exponential time on (a+)+$; RE2 does not
                regex = self.pick(("^E", "[0-9]+", "a.c", "@example[.]org$", "^[A-Z]{2}$", "(a+)+$", "(x|xx)+y"))
                return f"{self.pick(('', 'NOT '))}REGEXP_LIKE({target}, '{regex}')"
            op = self.pick(("LIKE", "NOT LIKE", "ILIKE"))
            return f"{target} {op} '{pattern.replace(chr(39), chr(39) * 2)}'"
        if form == 6:
            return f"{left} {self.pick(_CMP)} {self.expr(sc, kind, d)}"
        if form == 7:
            return f"NOT ({self.cond(sc, d)})"
        if form == 8:
            return f"({self.cond(sc, d)}{self.sep()}{self.pick(('AND', 'OR'))} {self.cond(sc, d)})"
        if form == 9:
            return self.exists(sc, d)
        if form == 10:
            return self.in_subquery(sc, left, kind, d)
        if form == 11:
            return f"{left} IS {self.pick(('', 'NOT '))}DISTINCT FROM {self.literal(kind, samples)}"
        if form == 12 and depth >= 2:
            return f"{left} {self.pick(_CMP)} {self.scalar_subquery(sc, kind, d)}"
        if form == 13:
            return self.poison(sc) or f"{left} IS NOT NULL"
        return f"({self.cond(sc, d)} AND {self.cond(sc, d)})"

    def poison(self, sc: Scope) -> str | None:
        """A predicate that fails on rows whose region is not EU, over a product whose row filter hides
        them from this principal: it must never fail (only a predicate run below the filter could)."""
        regions = [
            (r, i)
            for r, i in self.columns_of(sc, TEXT)
            if r.columns[i][0].lower() == "region"
            and r.product is not None
            and (self.principal, r.product.name) in self.p.eu_only
        ]
        if not regions:
            return None
        self.tags.add("poison")
        region = self.ref(sc, *self.pick(regions))
        visible = f"{region} = 'EU' OR {region} IS NULL"  # NULL: no row on the other side of an outer join
        if self.chance(50) or not self.p.rich:
            return f"ABS(CASE WHEN {visible} THEN 1 ELSE -9223372036854775807 - 1 END) > 0"
        return f"CAST(CASE WHEN {visible} THEN '1' ELSE {region} END AS INT) = 1"

    def window(self, sc: Scope, kind: str) -> str:
        self.tags.add("window")
        partition = self.pick(self.columns_of(sc) or [None])
        over = f"PARTITION BY {self.ref(sc, *partition)}" if partition is not None and self.chance(60) else ""
        keys = [self.ref(sc, r, i) for r in sc.rels for i, c in enumerate(r.columns) if c[0] in r.key]
        total = bool(keys) and all(r.key for r in sc.rels)
        same = self.column(sc, kind)
        value = same[0] if same is not None else self.literal(kind)
        if kind == INT:
            if total and self.chance(40):
                fn = self.pick(("ROW_NUMBER()", f"NTILE({self.n(1, 4)})"))
                return f"{fn} OVER ({over} ORDER BY {', '.join(keys)})"
            order = self.column(sc, self.pick((INT, TEXT, TIME)))
            rank = self.pick(("RANK()", "DENSE_RANK()", "COUNT(*)"))
            by = f" ORDER BY {order[0]} {self.pick(('', 'DESC'))}" if order is not None and rank != "COUNT(*)" else ""
            return f"{rank} OVER ({over}{by})"
        if total and self.chance(40):
            fn = self.pick(("LAG", "LEAD", "FIRST_VALUE"))
            return f"{fn}({value}) OVER ({over} ORDER BY {', '.join(keys)})"
        agg = self.pick(("MIN", "MAX")) if kind in (TEXT, TIME) else self.pick(("SUM", "AVG", "MIN", "MAX"))
        by = f" ORDER BY {value}" if self.chance(40) else ""
        return f"{agg}({value}) OVER ({over}{by})"

    def aggregate(self, sc: Scope, kind: str, depth: int) -> str:
        d = max(0, depth - 1)
        value = self.expr(sc, kind, d)
        if kind == INT:
            form = self.n(0, 7)
            if form == 0:
                return "COUNT(*)"
            if form == 1:
                return f"COUNT({self.expr(sc, self.pick((INT, TEXT, TIME)), d)})"
            if form == 2:
                return f"COUNT(DISTINCT {self.expr(sc, self.pick((INT, TEXT)), d)})"
            if form == 3:
                return f"COUNT(*) FILTER (WHERE {self.cond(sc, d)})"
            if form == 4:
                return f"COUNT_IF({self.cond(sc, d)})"
            if form == 5:
                return f"COUNT(*) + {self.aggregate(sc, INT, d)}"
            return f"{self.pick(('SUM', 'MIN', 'MAX'))}({value})"
        if kind == NUM:
            form = self.n(0, 4)
            if form == 0 and self.p.rich:
                return f"STDDEV({value})"
            if form == 1:
                return f"SUM({value}) / NULLIF(COUNT(*), 0)"
            return f"{self.pick(('SUM', 'AVG', 'MIN', 'MAX'))}({value})"
        return f"{self.pick(('MIN', 'MAX'))}({value})"

    # -- subqueries ----------------------------------------------------------------------------------

    def correlated(self, inner: Rel, sc: Scope) -> str | None:
        """A predicate tying ``inner`` to a relation of the enclosing query on a shared key."""
        pairs = []
        for outer in sc.rels:
            for i, (name, kind, _) in enumerate(outer.columns):
                for j, (other, other_kind, _) in enumerate(inner.columns):
                    if name.lower() == other.lower() and kind == other_kind and name.lower().endswith(("_id", "sku")):
                        pairs.append((outer, i, j))
        if not pairs:
            return None
        self.tags.add("correlated")
        outer, i, j = self.pick(pairs)
        inside = Scope([inner])
        return f"{self.ref(inside, inner, j)} = {outer.qual}.{outer.columns[i][0]}"

    def sub_from(self, sc: Scope) -> tuple[str, Rel]:
        product = self.pick(self.pool)
        alias = self.alias()
        rel = self.product_rel(product, alias)
        return f"{self.product_name(product)} AS {alias}", rel

    def scalar_subquery(self, sc: Scope, kind: str, depth: int) -> str:
        self.tags.add("subquery")
        source, rel = self.sub_from(sc)
        inner = Scope([rel], outer=sc.rels)
        where = [w for w in (self.correlated(rel, sc), self.cond(inner, depth - 1) if self.chance(40) else None) if w]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        if kind == BOOL:
            return f"(SELECT COUNT(*) FROM {source}{clause}) > 0"
        return f"(SELECT {self.aggregate(inner, kind, depth)} FROM {source}{clause})"

    def exists(self, sc: Scope, depth: int) -> str:
        self.tags.add("subquery")
        source, rel = self.sub_from(sc)
        inner = Scope([rel], outer=sc.rels)
        where = [w for w in (self.correlated(rel, sc), self.cond(inner, depth - 1) if self.chance(50) else None) if w]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return f"{self.pick(('', 'NOT '))}EXISTS (SELECT 1 FROM {source}{clause})"

    def in_subquery(self, sc: Scope, left: str, kind: str, depth: int) -> str:
        self.tags.add("subquery")
        source, rel = self.sub_from(sc)
        inner = Scope([rel], outer=sc.rels)
        found = self.column(inner, kind)
        if found is None:
            return f"{left} IS NULL"
        clause = f" WHERE {self.cond(inner, depth - 1)}" if self.chance(50) else ""
        return f"{left} {self.pick(('', 'NOT '))}IN (SELECT {found[0]} FROM {source}{clause})"

    # -- FROM ----------------------------------------------------------------------------------------

    def product_rel(self, product: Product, alias: str | None) -> Rel:
        return Rel(
            qual=alias or product.short,
            columns=[(c.name, c.type, c.samples) for c in product.columns],
            key=list(product.key),
            product=product,
            full=None if alias else product.name,
        )

    def from_clause(self, sc: Scope, depth: int) -> tuple[str, list[Rel]]:
        choice = self.n(0, 9)
        if sc.ctes and choice <= 2:
            cte = self.pick(sc.ctes)
            alias = self.alias() if self.chance(40) else None
            rel = Rel(alias or cte.qual, cte.columns, cte.key)
            text = f"{cte.qual}{f' AS {alias}' if alias else ''}"
            joinable = [
                (p, i, j)
                for p in self.pool
                for i, c in enumerate(rel.columns)
                for j, pc in enumerate(p.columns)
                if c[0].lower() == pc.name and c[1] == pc.type and pc.name.endswith(("_id", "sku")) and pc.name in p.key
            ]
            if joinable and self.chance(50):
                product, i, j = self.pick(joinable)
                other = self.product_rel(product, self.alias())
                text += f" JOIN {self.product_name(product)} AS {other.qual} ON {rel.qual}.{rel.columns[i][0]} = "
                text += f"{other.qual}.{product.columns[j].name}"
                return text, [rel, other]
            return text, [rel]
        if depth > 0 and choice == 3:
            self.tags.add("derived")
            inner = self.select(Scope([], outer=[], ctes=sc.ctes), depth - 1, named=True)
            alias = self.alias()
            rel = Rel(alias, [(n or "", k, s) for n, k, s in inner.outputs], inner.key)
            return f"({inner.sql}) AS {alias}", [rel]
        product = self.pick(self.pool)
        unaliased = not self.chance(60)
        first = self.product_rel(product, None if unaliased else self.alias())
        text = self.product_name(product) + ("" if unaliased else f" AS {first.qual}")
        rels = [first]
        for _ in range(self.n(0, 2) if choice >= 6 else 0):
            text += self.join(rels)
        return text, rels

    def join(self, rels: list[Rel]) -> str:
        names = {r.product.name for r in rels if r.product is not None}
        edges = [(j, j.left in names) for j in self.p.joins if j.left in names or j.right in names]
        edges = [
            (j, forward) for j, forward in edges if (j.right if forward else j.left) in {p.name for p in self.pool}
        ]
        if not edges:
            return ""
        self.tags.add("join")
        edge, forward = self.pick(edges)
        near, far = (edge.left, edge.right) if forward else (edge.right, edge.left)
        anchor = self.pick([r for r in rels if r.product is not None and r.product.name == near])
        product = self.p.product(far)
        other = self.product_rel(product, self.alias())
        rels.append(other)
        pairs = [(a, b) if forward else (b, a) for a, b in edge.pairs]
        on = " AND ".join(f"{anchor.qual}.{self.column_name(a)} = {other.qual}.{self.column_name(b)}" for a, b in pairs)
        kind = self.pick(("JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN"))
        return f"{self.sep()}{kind} {self.product_name(product)} AS {other.qual} ON {on}"

    # -- SELECT --------------------------------------------------------------------------------------

    def select(
        self, sc: Scope, depth: int, *, named: bool = False, want: list[str] | None = None, top: bool = False
    ) -> Query:
        source, rels = self.from_clause(sc, depth)
        inner = Scope(rels, outer=sc.outer, ctes=sc.ctes)
        aggregate = self.chance(35)
        where = f"{self.sep()}WHERE {self.cond(inner, depth)}" if self.chance(55) else ""
        if aggregate:
            return self.aggregate_select(inner, source, where, depth, named=named, want=want)
        inner.windows = self.chance(25)
        items: list[str] = []
        outputs: list[tuple[str | None, str, tuple[str, ...]]] = []
        if want is None and len(rels) == 1 and self.chance(12):
            items.append("*" if self.chance(50) else f"{rels[0].qual}.*")
            outputs = [(n, k, s) for n, k, s in rels[0].columns]
            self.tags.add("star")
        kinds = want if want is not None else ([] if items else [None] * self.n(1, 4))
        for kind in kinds:
            item, output = self.projection(inner, kind, depth, named=named)
            items.append(item)
            outputs.append(output)
        key = self.keep_key(rels, outputs)
        distinct = "DISTINCT " if self.chance(8) else ""
        text = f"SELECT{self.sep()}{distinct}{', '.join(items)}{self.sep()}FROM {source}{where}"
        if not top and key and len(rels) == 1 and rels[0].key and self.chance(10):
            order = ", ".join(f"{rels[0].qual}.{k}" for k in rels[0].key)
            text += f" ORDER BY {order} LIMIT {self.n(0, 20)}"
        return Query(text, outputs, key)

    def projection(
        self, sc: Scope, kind: str | None, depth: int, *, named: bool
    ) -> tuple[str, tuple[str | None, str, tuple[str, ...]]]:
        columns = self.columns_of(sc, kind)
        if columns and self.chance(50):
            rel, index = self.pick(columns)
            name, column_kind, samples = rel.columns[index]
            if self.chance(70 if named else 25):
                return self.ref(sc, rel, index), (name, column_kind, samples)
            alias = self.output_name()
            return f"{self.ref(sc, rel, index)} AS {alias}", (alias, column_kind, samples)
        kind = kind or self.pick((INT, NUM, TEXT, TIME, BOOL, TEXT, INT))
        text = self.expr(sc, kind, depth)
        if named or self.chance(50):
            alias = self.output_name()
            return f"{text} AS {alias}", (alias, kind, ())
        return text, (None, kind, ())

    def output_name(self) -> str:
        base = self.pick(OUTPUT_NAMES)
        name, i = base, 1
        while name.lower() in self.used:
            i += 1
            name = f'{base[:-1]}{i}"' if base.startswith('"') else f"{base}{i}"
        self.used.add(name.lower())
        return name

    def keep_key(self, rels: list[Rel], outputs: list[tuple[str | None, str, tuple[str, ...]]]) -> list[str]:
        """Output names that stay unique: a single relation's key, when every key column is output."""
        if len(rels) != 1 or not rels[0].key:
            return []
        names = {n.lower(): n for n, _, _ in outputs if n}
        if all(k.lower() in names for k in rels[0].key):
            return [names[k.lower()] for k in rels[0].key]
        return []

    def aggregate_select(
        self, sc: Scope, source: str, where: str, depth: int, *, named: bool, want: list[str] | None
    ) -> Query:
        self.tags.add("aggregate")
        groups: list[tuple[str, tuple[str | None, str, tuple[str, ...]]]] = []
        wanted = list(want) if want is not None else None
        for _ in range(self.n(0, 2)):
            if wanted is not None and not wanted:
                break
            kind = wanted[0] if wanted is not None else None
            columns = self.columns_of(sc, kind)
            if not columns:
                break
            rel, index = self.pick(columns)
            name, column_kind, samples = rel.columns[index]
            if column_kind == BOOL and self.p.store == "postgresql" and wanted is None:
                continue
            groups.append((self.ref(sc, rel, index), (name, column_kind, samples)))
            if wanted is not None:
                wanted.pop(0)
        items = [g for g, _ in groups]
        outputs = [o for _, o in groups]
        for kind in wanted if wanted is not None else [self.pick((INT, NUM, TEXT, TIME, INT))] * self.n(1, 3):
            value = self.aggregate(sc, kind, depth) if kind != BOOL else f"COUNT(*) > {self.n(0, 3)}"
            if named or self.chance(50):
                alias = self.output_name()
                items.append(f"{value} AS {alias}")
                outputs.append((alias, kind, ()))
            else:
                items.append(value)
                outputs.append((None, kind, ()))
        text = f"SELECT {', '.join(items)}{self.sep()}FROM {source}{where}"
        if groups:
            by = [str(i + 1) for i in range(len(groups))] if self.chance(40) else [g for g, _ in groups]
            text += f" GROUP BY {', '.join(by)}"
        if self.chance(25):
            text += f" HAVING {self.aggregate(sc, INT, depth)} {self.pick(_CMP)} {self.literal(INT)}"
        key = [o[0] for o in outputs[: len(groups)] if o[0]] if groups else []
        return Query(text, outputs, key if len(key) == len(groups) else [])

    # -- statements ----------------------------------------------------------------------------------

    def statement(self) -> str:
        kind = self.weighted(KINDS)
        if kind == "hostile":
            self.tags.add("hostile")
            return _hostile.hostile(self)
        if kind == "beyond-cap":
            self.tags.add("beyond-cap")
            return _hostile.beyond_cap(self)
        if kind == "deep":
            self.tags.add("deep")
            return _hostile.deep(self)
        if kind == "failing":
            self.tags.add("failing")
            return _hostile.failing(self)
        sc = Scope([])
        prefix = ""
        if kind in ("cte", "recursive", "collision"):
            prefix, sc.ctes = self.with_clause(kind)
        if kind == "setop":
            body = self.set_operation(sc)
        else:
            body = self.select(sc, self.n(1, 3), top=True)
        return prefix + self.order_limit(body)

    def order_limit(self, body: Query) -> str:
        text = body.sql
        if self.chance(40):
            positions = [str(i + 1) for i in range(len(body.outputs))]
            chosen = positions[: self.n(1, len(positions))]
            text += " ORDER BY " + ", ".join(f"{p}{self.pick(('', ' DESC', ' ASC'))}" for p in chosen)
        if self.chance(60):
            text += f" LIMIT {self.pick((0, 1, 5, 10, 10, 20, 50, 100, 999, 1001))}"
            if self.chance(25):
                text += f" OFFSET {self.pick((0, 1, 3, 50, 2000))}"
        return text

    def set_operation(self, sc: Scope) -> Query:
        self.tags.add("setop")
        kinds = [self.pick((INT, TEXT, TEXT, NUM, TIME)) for _ in range(self.n(1, 3))]
        left = self.select(sc, self.n(0, 2), want=kinds, top=True)
        op = self.pick(("UNION", "UNION ALL", "INTERSECT", "EXCEPT"))
        right = self.select(sc, self.n(0, 2), want=kinds, top=True)
        return Query(f"{left.sql}{self.sep()}{op} {right.sql}", left.outputs)

    def with_clause(self, kind: str) -> tuple[str, list[Rel]]:
        ctes: list[Rel] = []
        parts: list[str] = []
        recursive = kind != "cte"
        if kind == "collision":
            parts.append(_hostile.colliding_cte(self))
        if kind == "recursive":
            parts.append(self.recursive_cte(ctes))
        for _ in range(self.n(1 if kind == "cte" else 0, 2)):
            query = self.select(Scope([], ctes=list(ctes)), self.n(0, 2), named=True)
            name = self.alias()
            if self.chance(30):
                columns = [f"c{i}_{name.strip(chr(34))}" for i in range(len(query.outputs))]
                columns = [c if c.isascii() else f'"{c}"' for c in columns]
                head = f"{name}({', '.join(columns)})"
                rename = dict(zip([n for n, _, _ in query.outputs], columns, strict=True))
                outputs = [(c, k, s) for c, (_, k, s) in zip(columns, query.outputs, strict=True)]
                key = [rename[k] for k in query.key]
            else:
                head, outputs, key = name, [(n or "", k, s) for n, k, s in query.outputs], query.key
            parts.append(f"{head} AS ({query.sql})")
            ctes.append(Rel(name, outputs, key))
        return f"WITH {'RECURSIVE ' if recursive else ''}{', '.join(parts)}{self.sep()}", ctes

    def recursive_cte(self, ctes: list[Rel]) -> str:
        """A bounded WITH RECURSIVE: a counter, or a walk along a product's integer key."""
        self.tags.add("recursive")
        name, column = self.alias(), self.pick(("n", "k", "depth"))
        walkable = [p for p in self.pool if len(p.key) == 1 and p.column(p.key[0]).type == INT]
        if walkable and self.chance(50):
            product = self.pick(walkable)
            key, alias = product.key[0], self.alias()
            start = f"SELECT MIN({key}), 0 FROM {self.product_name(product)}"
            step = (
                f"SELECT {alias}.{key}, w.{column} + 1 FROM {name} AS w JOIN {self.product_name(product)} AS {alias}"
                f" ON {alias}.{key} = w.id + 1 WHERE w.{column} < {self.n(1, 20)}"
            )
            ctes.append(Rel(name, [("id", INT, ()), (column, INT, ())], ["id"]))
            return f"{name}(id, {column}) AS ({start} UNION ALL {step})"
        low, high = self.n(0, 3), self.n(0, 12)
        ctes.append(Rel(name, [(column, INT, tuple(str(i) for i in range(low, high + 1)))], [column]))
        step = f"SELECT {column} + 1 FROM {name} WHERE {column} < {high}"
        return f"{name}({column}) AS (SELECT {low} UNION {self.pick(('ALL ', ''))}{step})"


def statements(profile: Profile) -> st.SearchStrategy[Case]:
    """One :class:`Case` per draw: a principal of the store and a statement for it."""

    @st.composite
    def draw_case(draw: st.DrawFn) -> Case:
        writer = Writer(draw, profile)
        sql = writer.statement()
        return Case(writer.principal, sql, frozenset(writer.tags))

    return draw_case()


cases = statements
