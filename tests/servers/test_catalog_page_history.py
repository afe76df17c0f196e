"""The version history a catalog page shows: diffs newest first, without what a reader may not see."""

from __future__ import annotations

from pathlib import Path

from catalog.contract import ProductContract
from catalog.loader import load_contract_file
from catalog.registry import Registry
from servers.catalog_page.views import version_history

DEMO_CONTRACTS = Path(__file__).resolve().parents[2] / "servers" / "demo_contracts"


def _orders() -> ProductContract:
    (contract,) = load_contract_file(DEMO_CONTRACTS / "shop.orders.yaml")
    return contract


def _changed(contract: ProductContract, version: str, **changes: object) -> ProductContract:
    data = contract.model_dump(mode="json", exclude_none=True)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section] = {**data.get(section, {}), field: value}
        else:
            data[section] = value
    return ProductContract.model_validate({**data, "version": version})


def test_history_lists_versions_newest_first_with_their_changes(tmp_path: Path) -> None:
    v1 = _orders()
    columns = [*v1.model_dump(mode="json")["columns"], {"name": "coupon", "type": "string", "description": "Coupon"}]
    v2 = _changed(v1, "1.1.0", columns=columns)
    with Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register(v1, actor="owner")
        registry.register(v2, actor="owner")
        history = version_history(registry, "shop.orders", {"shop.orders"})
    assert [e.version for e in history] == ["1.1.0", "1.0.0"]
    assert history[0].actor == "owner" and history[0].at is not None
    assert "column 'coupon' added" in history[0].changes
    assert not history[0].breaking
    assert history[1].changes == ["first registered version"]


def test_history_never_shows_a_row_filter_condition_nor_unreadable_products(tmp_path: Path) -> None:
    v1 = _orders()
    filters = [
        *v1.model_dump(mode="json")["policy"]["row_filters"],
        {"when": "role:vip", "where": "channel = 'secret-42'"},
    ]
    v2 = _changed(v1, "1.1.0", policy__row_filters=filters, lineage__downstream=["hidden.product", "shop.order_lines"])
    (hidden,) = load_contract_file(DEMO_CONTRACTS / "shop.fx_rates.yaml")
    with Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register(hidden.model_copy(update={"name": "hidden.product"}), actor="owner")
        registry.register(v1, actor="owner")
        registry.register(v2, actor="owner")
        history = version_history(registry, "shop.orders", {"shop.orders", "shop.order_lines"})
    shown = "\n".join(history[0].changes)
    assert "policy: row filter added for role:vip (its condition is not shown)" in shown
    assert "secret-42" not in shown
    assert "hidden.product" not in shown
    assert "lineage.downstream changed (it names a product you may not read)" in shown
