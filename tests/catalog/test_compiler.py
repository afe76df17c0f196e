"""The per-connection compiler: the statements it builds carry the limits they run under."""

from __future__ import annotations

from sqlglot import exp

from catalog.compiler import Compiler
from catalog.policy import govern
from catalog.query import Limits, Query
from tests.catalog.governance_fixtures import ANALYST, SALT, contract


def _limit(statement: exp.Query) -> int:
    return int(statement.args["limit"].expression.name)


def test_a_compiled_query_runs_with_its_page_size_and_fetches_one_more_row() -> None:
    compiler = Compiler("postgres", SALT, Limits(max_rows=50, timeout_s=3))
    compiled = compiler.compile(govern(contract(), ANALYST), Query(limit=10))
    assert compiled.limits.max_rows == compiled.row_limit == 10
    assert compiled.limits.timeout_s == 3
    assert _limit(compiled.statement) == 11


def test_a_rewritten_statement_runs_with_max_rows_and_fetches_one_more_row() -> None:
    compiler = Compiler("sqlite", SALT, Limits(max_rows=7))
    view = govern(contract(), ANALYST)
    parsed = compiler.parse("SELECT person_id FROM crm.people LIMIT 500")
    rewritten = compiler.rewrite(parsed, dict.fromkeys(parsed.products, view))
    assert rewritten.limits.max_rows == 7
    assert _limit(rewritten.statement) == 8


def test_bounded_changes_only_the_limits_given() -> None:
    compiler = Compiler("duckdb", SALT, Limits(max_rows=5, max_bytes=2048))
    bounded = compiler.bounded(max_rows=5000)
    assert (bounded.dialect, bounded.hash_salt, bounded.limits.max_rows, bounded.limits.max_bytes) == (
        "duckdb",
        SALT,
        5000,
        2048,
    )
    assert compiler.limits.max_rows == 5
