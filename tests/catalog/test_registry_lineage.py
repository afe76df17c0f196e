"""A breaking change names the downstream products it reaches: when refused, when registered, in a diff."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.contract import ProductContract
from catalog.errors import RegistrationError
from catalog.registry import Registry
from tests.catalog.test_lineage import ORDERS, product


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register(ORDERS, actor="alice")
        registry.register(
            product(
                "sales.by_region",
                ["region", "orders"],
                query="SELECT region, count(*) AS orders FROM orders GROUP BY region",
            ),
            actor="alice",
        )
        registry.register(product("sales.board", ["region"], table="board", upstream=["sales.by_region"]), actor="bob")
        yield registry


def without_region(version: str) -> ProductContract:
    columns = [c for c in ORDERS.columns if c.name != "region"]
    return ORDERS.model_copy(update={"version": version, "columns": columns})


def test_a_refused_breaking_change_lists_the_downstream_products_it_would_break(registry: Registry) -> None:
    with pytest.raises(RegistrationError) as info:
        registry.register(without_region("1.1.0"), actor="alice")
    message = info.value.message
    assert "register it as 2.0.0" in message
    assert "it affects downstream sales.by_region (via shop.orders; columns region" in message
    assert "sales.board (via sales.by_region; columns not known)" in message


def test_a_registered_breaking_change_reports_its_downstream_products_and_the_diff_shows_them(
    registry: Registry,
) -> None:
    result = registry.register(without_region("2.0.0"), actor="alice")
    assert result.diff is not None
    assert [(i.product, i.columns) for i in result.diff.affected_downstream] == [
        ("sales.by_region", ["region"]),
        ("sales.board", None),
    ]
    assert result.message.endswith("affects downstream: sales.by_region, sales.board")
    rendered = registry.diff("shop.orders", "1.0.0", "2.0.0").render()
    assert "  affects downstream:\n    - sales.by_region (via shop.orders; columns region" in rendered


def test_a_compatible_change_reports_no_downstream_products(registry: Registry) -> None:
    renamed = ORDERS.model_copy(update={"version": "1.1.0", "title": "Orders"})
    result = registry.register(renamed, actor="alice")
    assert result.diff is not None and result.diff.affected_downstream == []
    assert "affects downstream" not in result.message
