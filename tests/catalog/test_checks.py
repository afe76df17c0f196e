"""Quality checks and freshness without a store: contract validation, planned SQL, verdicts, timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from catalog.checks import judge, plan_checks
from catalog.contract import ProductContract, QualityCheck
from catalog.errors import ContractError
from catalog.freshness import assess, freshness_sql
from catalog.loader import parse_contracts
from catalog.sqlguard import parse_product_sql
from catalog.timestamps import format_age, to_utc

BASE = """
name: qa.events
version: 1.0.0
title: Events
description: Events.
owner: {team: qa}
source: {connection: store, table: events}
columns:
  - {name: id, type: integer, description: Id}
  - {name: kind, type: string, description: Kind}
  - {name: created_at, type: timestamp, description: Created}
"""
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def contract(**extra: Any) -> ProductContract:
    return ProductContract.model_validate(yaml.safe_load(BASE) | extra)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"check": "sql"}, "a sql check needs 'sql'"),
        ({"check": "sql", "sql": "DELETE FROM qa.events"}, "must be exactly one SELECT"),
        ({"check": "sql", "sql": "SELECT FROM WHERE ("}, "is not valid SQL"),
        ({"check": "range", "column": "id"}, "a range check needs 'min' or 'max'"),
        ({"check": "range", "column": "id", "min": 5, "max": 1}, "min (5.0) is greater than max (1.0)"),
        ({"check": "row_count"}, "a row_count check needs 'min' or 'max'"),
        ({"check": "not_null"}, "a not_null check needs 'column'"),
        ({"check": "accepted_values", "column": "kind"}, "needs a non-empty 'values' list"),
        ({"check": "freshness", "column": "created_at"}, "a freshness check needs 'max_age'"),
        ({"check": "unique", "column": "id", "sql": "SELECT 1"}, "'sql' belongs to sql checks only"),
        ({"check": "not_null", "column": "id", "severity": "fatal"}, "'warn' or 'error'"),
    ],
)
def test_a_check_missing_what_its_kind_needs_is_refused_with_what_would_be_valid(
    check: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        QualityCheck.model_validate(check)
    assert message in str(info.value)


def test_a_check_or_sla_naming_an_undeclared_column_is_refused_with_the_declared_columns() -> None:
    with pytest.raises(ValidationError) as info:
        contract(quality=[{"check": "not_null", "column": "kidn"}])
    assert "quality[0]: unknown column 'kidn'; declared columns are ['id', 'kind', 'created_at']" in str(info.value)
    with pytest.raises(ValidationError) as info:
        contract(sla={"freshness": "1d", "freshness_column": "updated"})
    assert "sla.freshness_column: unknown column 'updated'" in str(info.value)
    with pytest.raises(ValidationError) as info:
        contract(sla={"freshness_column": "created_at", "loaded_at": "SELECT 1"})
    assert "set one of 'freshness_column' or 'loaded_at'" in str(info.value)


def test_every_planned_check_passes_the_sql_guard_and_quotes_its_columns_and_values() -> None:
    events = contract(
        quality=[
            {"check": "not_null", "columns": ["id", "kind"]},
            {"check": "unique", "columns": ["id", "kind"]},
            {"check": "accepted_values", "column": "kind", "values": ["a", "it's"]},
            {"check": "range", "column": "id", "min": 0, "max": 9.5},
            {"check": "row_count", "min": 1},
            {"check": "freshness", "column": "created_at", "max_age": "1d"},
            {"check": "sql", "name": "negative", "sql": "SELECT * FROM qa.events WHERE id < 0"},
        ]
    )
    plans = plan_checks(events)
    assert [p.name for p in plans] == [
        "not_null_id_kind",
        "unique_id_kind",
        "accepted_values_kind",
        "range_id",
        "row_count",
        "freshness_created_at",
        "negative",
    ]
    for plan in plans:
        assert parse_product_sql(plan.sql).products == ["qa.events"]
    assert "'it''s'" in plans[2].sql and '"kind"' in plans[2].sql
    assert plans[3].threshold == "id >= 0 and <= 9.5"
    assert plans[6].sql == "SELECT COUNT(*) AS observed FROM (SELECT * FROM qa.events WHERE id < 0) AS failing_rows"


def test_verdicts_follow_the_threshold_and_the_severity() -> None:
    events = contract(
        quality=[
            {"check": "row_count", "min": 2, "max": 3},
            {"check": "unique", "column": "id", "severity": "warn"},
            {"check": "freshness", "column": "created_at", "max_age": "1d"},
        ]
    )
    rows, unique, fresh = plan_checks(events)
    assert judge(rows, 2, now=NOW).status == "pass"
    assert judge(rows, 4, now=NOW).message == "4 rows; expected rows >= 2 and <= 3"
    assert judge(unique, None, now=NOW).status == "pass"  # sum() over an empty table
    assert judge(unique, 2, now=NOW).status == "warn"
    assert judge(fresh, "2026-06-01 06:00:00", now=NOW).status == "pass"
    stale = judge(fresh, datetime(2026, 5, 1), now=NOW)
    assert stale.status == "fail" and stale.observed == "2026-05-01T00:00:00+00:00"
    empty = judge(fresh, None, now=NOW)
    assert empty.status == "fail" and "no value" in empty.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 6, 1, 10, 0), datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        (datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        (date(2026, 6, 1), datetime(2026, 6, 1, tzinfo=UTC)),
        ("2026-06-01 10:00:00", datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        ("2026-06-01T10:00:00Z", datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        ("2026-06-01T12:00:00+02:00", datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        ("2026-06-01", datetime(2026, 6, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_from_every_store_become_aware_utc(value: object, expected: datetime) -> None:
    assert to_utc(value) == expected


@pytest.mark.parametrize("value", [None, "yesterday", 1717236000, b"2026"])
def test_a_value_that_is_no_timestamp_says_what_was_read(value: object) -> None:
    with pytest.raises(ValueError):
        to_utc(value)


def test_freshness_is_fresh_stale_or_unknown_with_a_reason() -> None:
    events = contract(
        quality=[{"check": "freshness", "column": "created_at", "max_age": "2d"}], sla={"freshness": "1d"}
    )
    assert freshness_sql(events) == 'SELECT MAX("created_at") AS as_of FROM qa.events'
    assert assess(events, "2026-06-01 00:00:00", now=NOW).state == "fresh"
    stale = assess(events, "2026-05-30 00:00:00", now=NOW)
    assert (stale.state, stale.sla, stale.age) == ("stale", "1d", "2d 12h")
    assert (
        assess(events, None, now=NOW).reason
        == "as_of not measurable: no value (the product has no rows, or the column is empty)"
    )
    assert assess(events, None, now=NOW, failure="store down").reason == "store down"
    assert "nothing to measure" in (assess(contract(), None, now=NOW).reason or "")
    loaded = contract(sla={"freshness": "1h", "loaded_at": "SELECT max(created_at) FROM qa.events"})
    assert freshness_sql(loaded) == "SELECT max(created_at) FROM qa.events"


def test_ages_read_as_short_text() -> None:
    assert [format_age(s) for s in (5, 125, 3600, 3 * 3600 + 120, 86_400 * 3 + 3600)] == [
        "5s",
        "2m",
        "1h",
        "3h 2m",
        "3d 1h",
    ]


def test_loading_a_contract_reports_check_sql_the_guard_would_refuse_at_its_line() -> None:
    text = (
        BASE
        + """quality:
  - {check: sql, sql: "SELECT * FROM qa.events WHERE pg_sleep(1) IS NULL"}
sla: {freshness: 1d, loaded_at: "SELECT max(created_at) FROM events"}
"""
    )
    with pytest.raises(ContractError) as info:
        parse_contracts(text)
    problems = {p.path: p for p in info.value.problems}
    assert set(problems) == {"quality[0].sql", "sla.loaded_at"}
    assert "pg_sleep" in problems["quality[0].sql"].message and problems["quality[0].sql"].line == 13
    assert problems["sla.loaded_at"].message.startswith("unknown table 'events': only products (domain.product")


def test_a_masked_column_cannot_be_the_freshness_column_every_reader_sees() -> None:
    masking = {"masking": [{"columns": ["created_at"], "method": "null"}], "access": ["*"]}
    with pytest.raises(ValidationError) as info:
        contract(policy=masking, sla={"freshness": "1d", "freshness_column": "created_at"})
    assert "sla.freshness_column: 'created_at' is masked by policy.masking" in str(info.value)
    with pytest.raises(ValidationError) as info:
        contract(policy=masking, quality=[{"check": "freshness", "column": "created_at", "max_age": "1d"}])
    assert "quality[0].column: 'created_at' is masked" in str(info.value)
