"""choose_store: which store answers, and the reason a replica is passed over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from catalog.contract import ProductContract
from catalog.policy import govern
from catalog.principal import Principal
from catalog.replica import columns_digest
from catalog.replica_log import ReplicaSync
from catalog.replica_route import choose_store, portable_filter, replica_view
from connectors.duckdb_replicas import replica_catalog, replica_slug

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
READER = Principal(name="rita", roles=frozenset({"analyst"}))


def _contract(*, sla: dict[str, Any] | None = None, masking: list[dict[str, Any]] | None = None, **replica: Any):  # type: ignore[no-untyped-def]
    return ProductContract.model_validate(
        {
            "name": "shop.orders",
            "version": "1.0.0",
            "title": "Orders",
            "description": "Orders",
            "owner": {"team": "shop"},
            "source": {"connection": "shop", "table": "orders"},
            "primary_key": ["order_id"],
            "columns": [
                {"name": "order_id", "type": "integer", "description": "id"},
                {"name": "email", "type": "string", "description": "buyer"},
                {"name": "born", "type": "date", "description": "birthday"},
            ],
            "policy": {"access": ["*"], "masking": masking or []},
            "sla": sla or {},
            "replicas": {"analytical": {"max_lag": "15m", **replica}},
        }
    )


def _run(contract: ProductContract, *, age: timedelta = timedelta(minutes=1), **fields: Any) -> ReplicaSync:
    """A successful run of ``contract``'s replica that began reading ``age`` before NOW."""
    data: dict[str, Any] = {
        "product": contract.name,
        "version": contract.version,
        "mode": "full",
        "status": "ok",
        "path": "/replicas/1.duckdb",
        "as_of": NOW - age,
        "columns_digest": columns_digest(contract),
        "duration_ms": 1.0,
        "synced_at": NOW,
        **fields,
    }
    return ReplicaSync.model_validate(data)


def test_a_fresh_replica_answers_aggregates_and_row_reads_stay_on_the_source() -> None:
    contract = _contract()
    view = govern(contract, READER)
    assert choose_store(view, _run(contract), aggregate=True, now=NOW).store == "replica"
    rows = choose_store(view, _run(contract), aggregate=False, now=NOW)
    assert (rows.store, rows.fallback_reason) == ("source", None)


@pytest.mark.parametrize(
    ("contract", "run_fields", "exists", "reason"),
    [
        (_contract(), {"age": timedelta(minutes=20)}, True, "is 20m behind, over max_lag 15m"),
        (_contract(sla={"freshness": "5m"}), {"age": timedelta(minutes=10)}, True, "over the freshness SLA 5m"),
        (_contract(), {"columns_digest": "another layout"}, True, "built for another version of its columns or masks"),
        (_contract(), {}, False, "replica file of shop.orders is missing"),
        (
            _contract(masking=[{"columns": ["born"], "method": "hash"}]),
            {},
            True,
            "['born'] are masked for you and are not text",
        ),
    ],
)
def test_a_replica_that_cannot_answer_as_the_source_is_passed_over_with_the_reason(
    contract: ProductContract, run_fields: dict[str, Any], exists: bool, reason: str
) -> None:
    choice = choose_store(
        govern(contract, READER), _run(contract, **run_fields), aggregate=True, now=NOW, file_exists=exists
    )
    assert choice.store == "source"
    assert reason in (choice.fallback_reason or ""), choice.fallback_reason


def test_the_replica_view_reads_stored_masks_as_they_are_and_keeps_the_others() -> None:
    contract = _contract(masked_at_rest=True, masking=[{"columns": ["email"], "method": "hash", "unless": "role:pii"}])
    view = govern(contract, READER)
    on_replica = replica_view(view, connection="replica_x", table="replica_shop__orders.replica")
    assert on_replica.masked == {}  # stored hashed: not hashed again
    assert on_replica.column_type("email") == "string" and on_replica.row_filters == view.row_filters
    assert on_replica.contract.source.table == "replica_shop__orders.replica"


@pytest.mark.parametrize(
    ("where", "portable"),
    [
        ("region = 'EU'", True),
        ("region IN ('EU', 'US') AND amount > 10", True),
        ("NOT (amount BETWEEN -5 AND 5) OR region IS NULL", True),
        ("region NOT LIKE 'eu'", False),  # SQLite's LIKE ignores case, DuckDB's does not
        ("region ILIKE 'eu%'", False),
        ("region SIMILAR TO 'EU%'", False),  # PostgreSQL and DuckDB disagree on 'EU-west'
        ("lower(region) = 'eu'", False),
        ("region < 'M'", False),  # text ordering follows the store's collation
        ("email = 'a@example.org'", False),  # email is stored hashed in the replica
        ("not sql at all (", False),
    ],
)
def test_only_row_filters_every_engine_reads_alike_run_on_the_replica(where: str, portable: bool) -> None:
    assert portable_filter(where, {"email"}) is portable


def test_a_row_filter_the_replica_could_read_differently_sends_the_read_to_the_source() -> None:
    masking = [{"columns": ["email"], "method": "hash"}]
    for where, masked_at_rest in (("email NOT LIKE 'p1%'", True), ("CAST(order_id AS TEXT) LIKE '1%'", False)):
        data = _contract(masking=masking, masked_at_rest=masked_at_rest).model_dump(mode="json", by_alias=True)
        data["policy"]["row_filters"] = [{"when": "*", "where": where}]
        contract = ProductContract.model_validate(data)
        run = _run(contract, masked_at_rest=masked_at_rest)
        choice = choose_store(govern(contract, READER), run, aggregate=True, now=NOW)
        assert choice.store == "source", where
        assert "is evaluated by the source" in (choice.fallback_reason or "")


def test_a_replica_of_another_source_is_not_read() -> None:
    contract = _contract()
    moved = contract.model_copy(update={"source": contract.source.model_copy(update={"table": "orders_2026"})})
    assert columns_digest(moved) != columns_digest(contract)
    choice = choose_store(govern(moved, READER), _run(contract), aggregate=True, now=NOW)
    assert choice.store == "source" and "built for another version" in (choice.fallback_reason or "")


def test_replica_names_are_one_to_one() -> None:
    assert replica_slug("crm__eu.people") != replica_slug("crm.eu__people")
    assert replica_catalog("crm__eu.people") != replica_catalog("crm.eu__people")
    assert replica_catalog("shop.orders") == "replica_shop__orders"
