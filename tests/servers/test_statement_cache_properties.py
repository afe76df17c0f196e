"""The statement cache keeps governance exactly as strong as a fresh compile.

Lookups reuse one parameterised statement per query shape (``catalog.compile.query_shape``), so the
properties of the governance tests are checked on the cached path too: a statement cached for one
principal and one set of values, then run for another principal and other values of the same shape,
returns exactly the rows a fresh compile with inline literals returns — behind the store's wall, on
every store — and refuses exactly the values the fresh compile refuses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.compile import compile_query, query_shape
from catalog.compiler import Compiler
from catalog.errors import InvalidRequestError
from catalog.policy import govern
from catalog.query import Limits, Query, RowSet
from connectors import Connector
from servers._statements import StatementCache
from tests.catalog.governance_fixtures import (
    ANALYST,
    EU_ANALYST,
    PII_READER,
    SALT,
    contract,
    leaked,
    open_connector,
)
from tests.catalog.test_governance_properties import MASKED_SHAPE, NUMBERS, STRINGS, filters, order_by, strings

PROPERTIES = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
LIMITS = Limits(max_rows=100, timeout_s=30)


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def connector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    with open_connector(request, tmp_path_factory, "cache") as connector:
        yield connector


def _new_value(draw: st.DrawFn, column: str, old: Any) -> Any:
    """Another value of ``old``'s type for ``column`` (so the query keeps its shape)."""
    if isinstance(old, bool) or old is None:
        return old
    if isinstance(old, int):
        return draw(st.integers(-5, 60))
    if isinstance(old, float):
        return draw(st.floats(-5, 120, allow_nan=False).map(lambda f: round(f, 2) + 0.5))
    if column not in STRINGS:  # dates, and strings where a number or date was due: refused either way
        return draw(st.one_of(st.dates().map(lambda d: d.isoformat()), strings))
    if old.startswith("%") and old.endswith("%"):
        return f"%{draw(strings)}%"
    return draw(strings)


def _revalued(draw: st.DrawFn, item: dict[str, Any]) -> dict[str, Any]:
    for group in ("and", "or"):
        if group in item:
            return {group: [_revalued(draw, f) for f in item[group]]}
    if "value" not in item:
        return item
    value = item["value"]
    if isinstance(value, list):
        return {**item, "value": [_new_value(draw, item["column"], v) for v in value]}
    return {**item, "value": _new_value(draw, item["column"], value)}


@st.composite
def same_shape_pairs(draw: st.DrawFn) -> tuple[Query, Query]:
    """Two queries of one shape: the same projection, filters, order and limit, other filter values."""
    raw = draw(
        st.fixed_dictionaries(
            {"where": st.lists(filters, min_size=1, max_size=3), "order_by": order_by},
            optional={"limit": st.integers(1, 60)},
        )
    )
    aggregate = draw(st.booleans())
    if aggregate:
        raw = {
            "where": raw["where"],
            "group_by": ["region"],
            "aggregates": [{"fn": "count"}, {"fn": "sum", "column": draw(st.sampled_from(NUMBERS))}],
        }
    first = Query.model_validate(raw)
    second = Query.model_validate({**raw, "where": [_revalued(draw, f) for f in raw["where"]]})
    return first, second


def _run(connector: Connector, statement: Any) -> RowSet:
    return anyio.run(connector.execute, statement)


def _fresh(connector: Connector, principal: Any, query: Query) -> RowSet | InvalidRequestError:
    """The oracle: a fresh compile with inline literals, behind the store's wall."""
    view = govern(contract(), principal)
    try:
        compiled = compile_query(view, query, limits=LIMITS, dialect=connector.dialect, hash_salt=SALT)
    except InvalidRequestError as exc:
        return exc
    return _run(connector, compiled)


def _cached(cache: StatementCache, connector: Connector, principal: Any, query: Query) -> RowSet | InvalidRequestError:
    view = govern(contract(), principal)
    compiler = Compiler(connector.dialect, hash_salt=SALT, limits=LIMITS)
    try:
        _compiled, prepared = cache.compiled(view, query, compiler=compiler, connector=connector)
    except InvalidRequestError as exc:
        return exc
    return _run(connector, prepared)


def _same(got: RowSet | InvalidRequestError, expected: RowSet | InvalidRequestError) -> None:
    if isinstance(expected, InvalidRequestError):
        assert isinstance(got, InvalidRequestError), got
        assert got.message == expected.message
        return
    assert not isinstance(got, InvalidRequestError), got.message
    assert got.columns == expected.columns
    assert Counter(map(repr, got.rows)) == Counter(map(repr, expected.rows))
    assert got.truncated == expected.truncated


@PROPERTIES
@given(
    pair=same_shape_pairs(),
    first=st.sampled_from([EU_ANALYST, ANALYST, PII_READER]),
    second=st.sampled_from([EU_ANALYST, ANALYST, PII_READER]),
)
def test_a_cached_statement_answers_like_a_fresh_compile_for_other_values_and_principals(
    connector: Connector, pair: tuple[Query, Query], first: Any, second: Any
) -> None:
    one, other = pair
    assert query_shape(one) == query_shape(other)
    cache = StatementCache()
    _same(_cached(cache, connector, first, one), _fresh(connector, first, one))
    # The same shape again: another principal and other values run the statement cached above when their
    # governed views agree (else their own), bound to the new values.
    got = _cached(cache, connector, second, other)
    _same(got, _fresh(connector, second, other))
    if isinstance(got, RowSet) and second is not PII_READER:
        text = repr(got.rows)
        assert not leaked(text), leaked(text)
        assert SALT not in text
        view = govern(contract(), second)
        for index, name in enumerate(got.columns):
            if name in view.masked:
                assert all(v is None or MASKED_SHAPE.match(str(v)) for v in {r[index] for r in got.rows})
            if name == "region" and view.row_filters:
                assert {r[index] for r in got.rows} <= {"EU"}


def test_one_statement_serves_every_key_of_a_lookup(connector: Connector) -> None:
    """A lookup by primary key compiles once, whatever the key; each key gets its own row."""
    cache = StatementCache()
    view = govern(contract(), ANALYST)
    compiler = Compiler(connector.dialect, hash_salt=SALT, limits=LIMITS)
    prepared_sql = set()
    for key in (1, 2, 3, 47):
        query = Query.model_validate({"where": [{"column": "person_id", "op": "=", "value": key}]})
        compiled, prepared = cache.compiled(view, query, compiler=compiler, connector=connector)
        assert compiled.parameters == {"p0": key} == prepared.parameters
        prepared_sql.add(prepared.sql)
        rows = _run(connector, prepared).rows
        assert [r[0] for r in rows] == [key]
    assert len(prepared_sql) == 1


def test_a_value_that_does_not_fit_is_refused_on_the_cached_path(connector: Connector) -> None:
    cache = StatementCache()
    view = govern(contract(), ANALYST)
    compiler = Compiler(connector.dialect, hash_salt=SALT, limits=LIMITS)
    ok = Query.model_validate({"where": [{"column": "signup", "op": ">=", "value": "2024-01-01"}]})
    cache.compiled(view, ok, compiler=compiler, connector=connector)
    bad = Query.model_validate({"where": [{"column": "signup", "op": ">=", "value": "yesterday"}]})
    assert query_shape(bad) == query_shape(ok)
    with pytest.raises(InvalidRequestError, match="signup"):
        cache.compiled(view, bad, compiler=compiler, connector=connector)
    nul = Query.model_validate({"where": [{"column": "email", "op": "=", "value": "a\x00b"}]})
    cache.compiled(
        view,
        nul.model_copy(update={"where": [nul.where[0].model_copy(update={"value": "ab"})]}),
        compiler=compiler,
        connector=connector,
    )
    with pytest.raises(InvalidRequestError, match="NUL"):
        cache.compiled(view, nul, compiler=compiler, connector=connector)
