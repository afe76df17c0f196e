"""``dataproducts lineage`` and the downstream products ``register`` / ``diff`` name for a breaking change."""

from __future__ import annotations

from pathlib import Path

from servers.demo import DemoWorkspace
from tests.servers.test_cli import contract_text, run


def test_lineage_prints_the_tree_with_column_links_and_pii_markers(demo: DemoWorkspace) -> None:
    code, output = run(demo, "lineage", "shop.order_lines", "--direction", "upstream", "--depth", "2")
    assert code == 0, output
    assert output.splitlines()[0] == "shop.order_lines"
    assert "shop.orders  declared+derived  region ← region  also reads order_id" in output
    assert "shop:order_lines (table)" in output
    assert "shop.customers  PII email:email" in output and "⚠ PII email, name, phone (may carry)" in output
    assert "downstream" not in output


def test_lineage_walks_downstream_to_the_given_depth(demo: DemoWorkspace) -> None:
    code, output = run(demo, "lineage", "shop.order_lines", "--direction", "downstream", "--depth", "1")
    assert code == 0 and "analytics.order_facts" in output and "analytics.daily_sales" not in output
    code, output = run(demo, "lineage", "shop.order_lines", "--direction", "downstream", "--depth", "2")
    assert code == 0 and "analytics.daily_sales" in output


def test_lineage_of_an_unknown_product_suggests_close_names(demo: DemoWorkspace) -> None:
    code, output = run(demo, "lineage", "shop.ordrs")
    assert code == 1 and "did you mean 'shop.orders'" in output


def test_a_refused_breaking_change_names_the_downstream_products_it_would_break(
    demo: DemoWorkspace, tmp_path: Path
) -> None:
    text = contract_text(demo, "shop.orders")
    retyped = text.replace("{name: region, type: string", "{name: region, type: integer")
    assert retyped != text
    path = tmp_path / "orders.yaml"
    path.write_text(retyped.replace("version: 1.0.0", "version: 1.1.0"), encoding="utf-8")
    code, output = run(demo, "register", "--no-live", str(path))
    flat = " ".join(output.split())
    assert code == 1 and "2.0.0" in flat
    assert "shop.order_lines (via shop.orders; columns region)" in flat
    assert "analytics.order_facts (via shop.orders; columns not known)" in flat
    code, output = run(demo, "show", "shop.orders")
    assert "version: 1.0.0" in output  # nothing was registered
