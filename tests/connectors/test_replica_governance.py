"""Governance is identical on replicas: random aggregate queries answer the same governed rows from a
fresh replica as from the source, for every principal the replica serves, and leak nothing.

The governance fixtures' ``crm.people`` (hash, partial, redact and null masks, a row filter, hostile
text) is replicated from SQLite and from PostgreSQL, plainly and ``masked_at_rest``; the replica's
statements are compiled by the same compiler, for DuckDB, from the principal's governed view.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.compiler import Compiler
from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError
from catalog.policy import govern
from catalog.query import Limits, Query
from catalog.registry import Registry
from catalog.replica_log import ReplicaLog
from catalog.replica_route import choose_store, replica_view
from catalog.sqlguard import parse_product_sql
from connectors import ConnectionConfig, Connector, _replica_file, connector_for
from connectors.replica_sync import sync_replica
from tests.catalog.governance_fixtures import (
    ANALYST,
    EU_ANALYST,
    PII_READER,
    SALT,
    contract,
    leaked,
    normalise,
    open_connector,
)

PRINCIPALS = (ANALYST, EU_ANALYST, PII_READER)
GROUPABLE = ("email", "phone", "full_name", "national_id", "region", "code", "score")
LIMITS = Limits(max_rows=10_000)


class Replicated:
    """A source connector, the replica built from it, and the contract with its replica section."""

    def __init__(self, contract: ProductContract, source: Connector, replica: Connector, run: Any) -> None:
        self.contract, self.source, self.replica, self.run = contract, source, replica, run


@pytest.fixture(
    scope="module",
    params=[("sqlite", False), ("sqlite", True), ("postgresql", False), ("postgresql", True)],
    ids=["sqlite", "sqlite-masked-at-rest", "postgresql", "postgresql-masked-at-rest"],
)
def replicated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    kind, masked_at_rest = request.param
    request.param = kind  # open_connector reads the store kind from it
    with open_connector(request, tmp_path_factory, "replica") as source, pytest.MonkeyPatch.context() as patch:
        # DuckDB compresses strings (FSST, dictionaries): stored uncompressed, raw bytes would show in a scan
        patch.setitem(_replica_file._CONFIG, "force_compression", "uncompressed")
        data = contract().model_dump(exclude_none=True)
        data["replicas"] = {"analytical": {"refresh": "full", "masked_at_rest": masked_at_rest}}
        with_replica = ProductContract.model_validate(data)
        tmp = tmp_path_factory.mktemp(f"replica-{kind}")
        log = ReplicaLog(Registry.from_url(str(tmp / "registry.db")))
        compiler = Compiler(source.dialect, SALT)
        report = anyio.run(lambda: sync_replica(with_replica, source, compiler, log, tmp / "replicas"))
        replica = connector_for(ConnectionConfig(name="replica_people", kind="duckdb", path=str(report.path)))
        try:
            yield Replicated(with_replica, source, replica, log.current("crm.people"))
        finally:
            anyio.run(replica.aclose)


_AGGREGATE = st.one_of(
    st.builds(lambda: {"fn": "count"}),
    st.builds(lambda c: {"fn": "count_distinct", "column": c}, st.sampled_from(GROUPABLE + ("note",))),
    st.builds(lambda c: {"fn": "count", "column": c}, st.sampled_from(GROUPABLE)),
    st.builds(lambda fn, c: {"fn": fn, "column": c}, st.sampled_from(["min", "max"]), st.sampled_from(GROUPABLE)),
    st.builds(
        lambda fn, c: {"fn": fn, "column": c}, st.sampled_from(["sum", "avg"]), st.sampled_from(["amount", "score"])
    ),
)
_FILTER = st.one_of(
    st.builds(lambda v: {"column": "region", "op": "=", "value": v}, st.sampled_from(["EU", "US", "APAC"])),
    st.builds(lambda v: {"column": "amount", "op": ">", "value": v}, st.integers(-5, 50)),
    st.builds(lambda v: {"column": "code", "op": "like", "value": v}, st.sampled_from(["1%", "%0%", "_"])),
    st.builds(lambda c: {"column": c, "op": "is_null"}, st.sampled_from(["note", "score", "email"])),
)
_QUERY = st.builds(
    lambda group, aggs, where: {"group_by": group, "aggregates": aggs, "where": where},
    st.lists(st.sampled_from(GROUPABLE), max_size=2, unique=True),
    st.lists(_AGGREGATE, min_size=1, max_size=3),
    st.lists(_FILTER, max_size=2),
)


def _run(store: Connector, statement: Any) -> list[tuple[Any, ...]]:
    rowset = anyio.run(store.execute, store.prepare(statement))
    return sorted((tuple(normalise(v) for v in row) for row in rowset.rows), key=repr)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_QUERY)
def test_replica_and_source_answer_every_aggregate_alike_and_leak_nothing(
    replicated: Replicated, raw: dict[str, Any]
) -> None:
    aliased = [{**agg, "as": f"a{i}"} for i, agg in enumerate(raw["aggregates"])]
    query = Query.model_validate({**raw, "aggregates": aliased})
    masked_at_rest = replicated.contract.replicas.analytical.masked_at_rest  # type: ignore[union-attr]
    for principal in PRINCIPALS:
        view = govern(replicated.contract, principal)
        choice = choose_store(view, replicated.run, aggregate=True, now=datetime.now(UTC))
        if masked_at_rest and principal is PII_READER:
            assert choice.store == "source" and "not the masked one" in (choice.fallback_reason or "")
            continue
        assert choice.store == "replica", choice.fallback_reason
        on_replica = replica_view(view, connection=replicated.replica.name)
        try:
            expected = _run(replicated.source, Compiler(replicated.source.dialect, SALT, LIMITS).compile(view, query))
        except InvalidRequestError as refused:
            with pytest.raises(InvalidRequestError) as also:
                Compiler("duckdb", SALT, LIMITS).compile(on_replica, query)
            assert str(also.value) == str(refused)  # the same refusal, word for word
            continue
        got = _run(replicated.replica, Compiler("duckdb", SALT, LIMITS).compile(on_replica, query))
        assert got == expected, (principal.name, query)
        if principal is not PII_READER:
            assert not leaked(json.dumps(got, default=str)), principal.name


def test_a_masked_at_rest_replica_file_holds_no_raw_personal_value(replicated: Replicated) -> None:
    found = leaked(Path(replicated.run.path).read_bytes().decode("utf-8", errors="replace"))
    if replicated.contract.replicas.analytical.masked_at_rest:  # type: ignore[union-attr]
        assert not found
    else:  # the control: the same scan finds raw values in a plain replica (the compiler masks them per reader)
        assert found


_SQL = st.builds(
    lambda group, fn, column, where: f"SELECT {group}, {fn}({column}) AS v FROM crm.people {where} GROUP BY {group}",
    st.sampled_from(GROUPABLE),
    st.sampled_from(["count", "min", "max"]),
    st.sampled_from(GROUPABLE + ("note",)),
    st.sampled_from(["", "WHERE region <> 'US'", "WHERE amount > 3 OR note IS NULL", "WHERE code LIKE '1%'"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=_SQL)
def test_run_sql_aggregates_answer_alike_on_the_replica(replicated: Replicated, sql: str) -> None:
    parsed = parse_product_sql(sql)
    masked_at_rest = replicated.contract.replicas.analytical.masked_at_rest  # type: ignore[union-attr]
    for principal in PRINCIPALS:
        if masked_at_rest and principal is PII_READER:
            continue  # the source answers them (see above)
        view = govern(replicated.contract, principal)
        on_replica = replica_view(view, connection=replicated.replica.name)
        source_sql = Compiler(replicated.source.dialect, SALT, LIMITS).rewrite(parsed, {view.name: view})
        replica_sql = Compiler("duckdb", SALT, LIMITS).rewrite(parsed, {view.name: on_replica})
        got = _run(replicated.replica, replica_sql)
        assert got == _run(replicated.source, source_sql), (principal.name, sql)
        if principal is not PII_READER:
            assert not leaked(json.dumps(got, default=str)), principal.name
