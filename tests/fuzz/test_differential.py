"""run_sql answers exactly what the principal's governed view answers, and leaks nothing, on every store.

The gate: at least ``DATAPRODUCTS_FUZZ_STATEMENTS`` (10,000) generated statements per store run through
the product path and the oracle (:mod:`tests.fuzz.harness`), inside a wall-clock budget; any finding
fails the test with the shortest reproductions of each cause. The generator is derandomized, so a run
is repeatable; ``bench/sql_fuzz.py`` explores with fresh seeds for as long as asked.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz.harness import Case, Differential
from tests.fuzz.oracle import mask
from tests.fuzz.runner import fuzz

pytestmark = pytest.mark.fuzz

STATEMENTS = int(os.environ.get("DATAPRODUCTS_FUZZ_STATEMENTS", "10000"))
BUDGET_S = float(os.environ.get("DATAPRODUCTS_FUZZ_SECONDS", "900"))

# The reported leaks, word for word: each must be refused or answer exactly what the oracle answers.
REPORTED = (
    'SELECT CAST(1 AS VARCHAR("1)) AS A, CUSTOMER_ID, FULL_NAME, EMAIL, PHONE FROM CUSTOMERS --")) FROM shop.customers',
    "SELECT upper(email), (SELECT max(phone) FROM shop.customers) FROM shop.customers LIMIT 3",
    "WITH RECURSIVE orders(order_id, region) AS (SELECT 100001, 'EU' UNION ALL SELECT order_id + 1, region "
    "FROM orders WHERE order_id < 104000) SELECT count(*) FROM shop.order_lines",
    "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM shop.orders",
)


def test_run_sql_agrees_with_the_oracle_and_leaks_nothing(differential: Differential) -> None:
    run = fuzz(differential, statements_wanted=STATEMENTS, seconds=BUDGET_S)
    print(run.report())
    assert not len(run.tally), run.report()
    assert run.statements >= STATEMENTS, f"ran out of time: {run.report()}"


@pytest.mark.parametrize("sql", REPORTED)
def test_reported_leaks_are_refused_or_governed(differential: Differential, sql: str) -> None:
    for principal in differential.oracles:
        findings = differential.check(Case(principal, sql))
        assert not findings, "\n".join(f"{f.kind}: {f.detail}" for f in findings)


def test_the_differential_catches_a_product_path_that_ignores_the_policy(differential: Differential) -> None:
    """The gate can fail: answers computed as sam (raw PII, every region), judged as ana's, are findings."""
    honest = differential.principals["ana"]
    differential.principals["ana"] = differential.principals["sam"]
    try:
        masked = differential.check(Case("ana", "SELECT customer_id, email, phone FROM shop.customers"))
        filtered = differential.check(Case("ana", "SELECT count(*) AS n FROM shop.orders"))
    finally:
        differential.principals["ana"] = honest
    assert {"leak:raw-value", "rows-differ"} <= {f.kind for f in masked}
    assert {f.kind for f in filtered} == {"rows-differ"}


def test_the_oracle_masks_as_the_policy_says() -> None:
    assert mask("+49 555 8133 696", "partial", "s") == "*** 696"
    assert mask("+1 5555", "partial", "s") == "***"
    assert mask("Jo Silverton", "redact", "s") == "***"
    assert mask("jo@example.org", "hash", "salt") == "92f16cc806428a9351251fdfa8de05ea"
    assert mask(None, "hash", "salt") is None
    assert mask("x", "null", "salt") is None
