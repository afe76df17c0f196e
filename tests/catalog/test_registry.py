from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from catalog._registry_tables import engine_for, metadata
from catalog.contract import Column, ProductContract
from catalog.errors import ContractError, NotFoundError, RegistrationError
from catalog.loader import load_contract, load_contract_file
from catalog.registry import Registry
from catalog.versioning import ContractDiff

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    with Registry.from_url(registry_url) as registry:
        yield registry


@pytest.fixture
def orders() -> ProductContract:
    return load_contract(FIXTURES / "orders.yaml")


def change(contract: ProductContract, **update: Any) -> ProductContract:
    return ProductContract.model_validate({**contract.model_dump(), **update})


def add_region(contract: ProductContract, version: str) -> ProductContract:
    region = Column(name="region", type="string", description="Sales region")
    return change(contract, version=version, columns=[*contract.columns, region])


def retype_amount(contract: ProductContract, version: str) -> ProductContract:
    columns = [c.model_copy(update={"type": "float"}) if c.name == "amount" else c for c in contract.columns]
    return change(contract, version=version, columns=columns)


def snapshot(registry: Registry) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every registry table, in primary-key order."""
    with registry.engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
            for table in metadata.sorted_tables
        }


def test_registering_a_new_product_creates_it(registry: Registry, orders: ProductContract) -> None:
    result = registry.register(orders, actor="alice")
    assert (result.status, result.version, result.previous_version) == ("created", "1.2.0", None)
    assert registry.get("sales.orders") == orders
    assert registry.versions("sales.orders") == ["1.2.0"]


def test_reregistering_identical_content_is_unchanged_and_writes_nothing(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    before = snapshot(registry)
    result = registry.register(load_contract(FIXTURES / "orders.yaml"), actor="bob")
    assert result.status == "unchanged"
    assert snapshot(registry) == before


def test_reregistering_an_older_identical_version_is_unchanged(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    registry.register(add_region(orders, "1.3.0"), actor="alice")
    result = registry.register(orders, actor="alice")
    assert result.status == "unchanged"
    assert "latest is 1.3.0" in result.message


def test_changed_content_under_the_same_version_is_refused_and_leaves_the_registry_as_it_was(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    before = snapshot(registry)
    with pytest.raises(RegistrationError, match=r"already registered with different content; bump the version"):
        registry.register(change(orders, title="Orders (all lines)"), actor="bob")
    assert snapshot(registry) == before


def test_a_version_lower_than_the_latest_is_refused(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    before = snapshot(registry)
    with pytest.raises(RegistrationError, match="1.1.0 is lower than the latest registered version 1.2.0"):
        registry.register(add_region(orders, "1.1.0"), actor="alice")
    assert snapshot(registry) == before


def test_a_breaking_change_without_a_major_bump_is_refused_naming_the_column_and_the_version(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    before = snapshot(registry)
    with pytest.raises(RegistrationError) as info:
        registry.register(retype_amount(orders, "1.3.0"), actor="alice")
    assert "column 'amount' retyped decimal → float" in info.value.message
    assert "register it as 2.0.0" in info.value.message
    assert snapshot(registry) == before

    result = registry.register(retype_amount(orders, "2.0.0"), actor="alice")
    assert result.status == "new_version"
    assert result.diff is not None and result.diff.breaking


def test_an_additive_change_with_a_minor_bump_registers_a_new_version(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    result = registry.register(add_region(orders, "1.3.0"), actor="bob")
    assert (result.status, result.previous_version) == ("new_version", "1.2.0")
    assert result.diff is not None and result.diff.columns_added == ["region"]
    assert registry.get("sales.orders").version == "1.3.0"
    assert registry.get("sales.orders", "1.2.0") == orders
    assert registry.versions("sales.orders") == ["1.2.0", "1.3.0"]


def test_a_failure_midway_through_a_registration_leaves_the_registry_as_it_was(
    registry: Registry, orders: ProductContract, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register(orders, actor="alice")
    before = snapshot(registry)

    def explode(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_insert_event", explode)  # after the version row and the product update
    with pytest.raises(RuntimeError, match="disk full"):
        registry.register(add_region(orders, "1.3.0"), actor="alice")
    with pytest.raises(RuntimeError, match="disk full"):
        registry.register(load_contract_file(FIXTURES / "two_products.yaml")[0], actor="alice")
    assert snapshot(registry) == before


def test_a_contract_with_unresolved_references_is_not_registered(registry: Registry, orders: ProductContract) -> None:
    data = orders.model_dump()
    data["primary_key"] = ["order_no"]
    broken = ProductContract.model_validate(data, context={"defer_references": True})
    with pytest.raises(ContractError, match="order_no"):
        registry.register(broken, actor="alice")
    assert registry.list_entries() == []


def test_an_unknown_product_suggests_close_names(registry: Registry, orders: ProductContract) -> None:
    with pytest.raises(NotFoundError, match="registry is empty"):
        registry.get("sales.orders")
    registry.register(orders, actor="alice")
    with pytest.raises(NotFoundError, match=r"no product 'sales.order'; did you mean 'sales.orders'\?"):
        registry.get("sales.order")
    with pytest.raises(NotFoundError, match="registered products: sales.orders"):
        registry.history("zzz.qqq")


def test_an_unknown_version_lists_the_registered_versions(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    with pytest.raises(NotFoundError, match="sales.orders has no version '9.9.9'; versions are 1.2.0"):
        registry.get("sales.orders", "9.9.9")


def test_history_says_who_changed_what_and_when_newest_first(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    registry.register(add_region(orders, "1.3.0"), actor="bob")
    registry.deprecate("sales.orders", actor="carol", note="use sales.order_lines")
    entries = registry.history("sales.orders")
    assert [(e.event, e.actor, e.version) for e in entries] == [
        ("deprecated", "carol", "1.3.0"),
        ("registered", "bob", "1.3.0"),
        ("registered", "alice", "1.2.0"),
    ]
    assert entries[0].summary == "use sales.order_lines"
    assert entries[1].summary == "column 'region' added"
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in entries)
    assert entries[0].at >= entries[1].at >= entries[2].at


def test_diff_between_two_registered_versions(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    registry.register(retype_amount(orders, "2.0.0"), actor="alice")
    diff = registry.diff("sales.orders", "1.2.0", "2.0.0")
    assert isinstance(diff, ContractDiff)
    assert diff.breaking
    assert diff.render().startswith("sales.orders 1.2.0 → 2.0.0: BREAKING")
    with pytest.raises(NotFoundError):
        registry.diff("sales.orders", "1.2.0", "3.0.0")


def test_a_deprecated_product_says_so_everywhere_and_leaves_search(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    registry.deprecate("sales.orders", actor="carol", note="use sales.order_lines")
    contract = registry.get("sales.orders")
    assert (contract.deprecated, contract.deprecation_note) == (True, "use sales.order_lines")
    [summary] = registry.list_entries()
    assert summary.deprecated and summary.deprecation_note == "use sales.order_lines"
    assert registry.list_entries(include_deprecated=False) == []
    assert registry.list_contracts()[0].deprecated
    assert registry.search("orders") == []
    assert [c.name for c in registry.search("orders", include_deprecated=True)] == ["sales.orders"]
    with pytest.raises(NotFoundError):
        registry.deprecate("sales.nothing", actor="carol", note="-")


def test_list_filters_by_domain_and_summarises_the_latest_version(registry: Registry, orders: ProductContract) -> None:
    registry.register(orders, actor="alice")
    registry.register(add_region(orders, "1.3.0"), actor="alice")
    for contract in load_contract_file(FIXTURES / "two_products.yaml"):
        registry.register(contract, actor="alice")
    assert [s.name for s in registry.list_entries()] == ["crm.customers", "crm.segments", "sales.orders"]
    [sales] = registry.list_entries(domain="sales")
    assert (sales.version, sales.title, sales.owner_team, sales.tags) == (
        "1.3.0",
        "Customer orders",
        "sales-data",
        ["sales", "revenue"],
    )
    assert sales.updated_at.tzinfo == UTC
    assert [c.name for c in registry.list_contracts(domain="crm")] == ["crm.customers", "crm.segments"]


def test_search_ranks_name_and_title_hits_above_description_and_column_hits(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    for contract in load_contract_file(FIXTURES / "two_products.yaml"):
        registry.register(contract, actor="alice")
    hits = registry.search_matches("customer")
    assert [h.name for h in hits] == ["crm.customers", "crm.segments", "sales.orders"]
    assert hits[0].score > hits[1].score > hits[2].score
    assert "column customer_email" in hits[2].matched
    assert [c.name for c in registry.search("revenue per segment")] == ["crm.segments", "sales.orders"]
    assert [c.name for c in registry.search("e-mail")] == ["crm.customers", "sales.orders"]
    assert registry.search("the of and") == []
    assert registry.search("nothing-like-this") == []
    assert len(registry.search("customer", limit=1)) == 1


def test_concurrent_registrations_of_one_change_add_exactly_one_version(
    registry: Registry, orders: ProductContract
) -> None:
    registry.register(orders, actor="alice")
    newer = add_region(orders, "1.3.0")
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda i: registry.register(newer, actor=f"w{i}").status, range(12)))
    assert sorted(statuses) == ["new_version"] + ["unchanged"] * 11
    assert registry.versions("sales.orders") == ["1.2.0", "1.3.0"]


def test_concurrent_registrations_of_one_new_product_create_it_once(
    registry: Registry, orders: ProductContract
) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda i: registry.register(orders, actor=f"w{i}").status, range(12)))
    assert sorted(statuses) == ["created"] + ["unchanged"] * 11
    assert [e.event for e in registry.history("sales.orders")] == ["registered"]


def test_replicas_creating_the_schema_at_once_all_succeed(registry_url: str, orders: ProductContract) -> None:
    replicas = [Registry(engine_for(registry_url), owns_engine=True) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda r: r.create_schema(), replicas))
        replicas[0].register(orders, actor="alice")
        assert replicas[3].get("sales.orders") == orders
    finally:
        for replica in replicas:
            replica.close()


def test_the_registry_persists_and_create_schema_is_idempotent(registry_url: str, orders: ProductContract) -> None:
    with Registry.from_url(registry_url) as first:
        first.register(orders, actor="alice")
        first.create_schema()
    with Registry.from_url(registry_url) as second:
        assert second.get("sales.orders") == orders


def test_a_plain_path_opens_a_sqlite_registry_creating_its_directory(tmp_path: Path, orders: ProductContract) -> None:
    path = tmp_path / "state" / "registry.db"
    with Registry.from_url(str(path)) as registry:
        registry.register(orders, actor="alice")
    assert path.exists()
