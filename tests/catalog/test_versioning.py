from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catalog.contract import Column, MaskingRule, Metric, Policy, ProductContract
from catalog.loader import load_contract
from catalog.versioning import (
    canonical_json,
    content_hash,
    diff_contracts,
    parse_semver,
    version_refusal,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def orders() -> ProductContract:
    return load_contract(FIXTURES / "orders.yaml")


def change(contract: ProductContract, **update: Any) -> ProductContract:
    return ProductContract.model_validate({**contract.model_dump(), **update})


def with_column(contract: ProductContract, name: str, **update: Any) -> list[Column]:
    return [c.model_copy(update=update) if c.name == name else c for c in contract.columns]


def test_equal_contracts_have_equal_hashes_and_any_change_alters_the_hash(orders: ProductContract) -> None:
    same = ProductContract.model_validate(orders.model_dump())
    assert content_hash(same) == content_hash(orders)
    assert canonical_json(same) == canonical_json(orders)
    assert content_hash(change(orders, title="Orders!")) != content_hash(orders)


def test_an_identical_contract_has_an_empty_diff(orders: ProductContract) -> None:
    diff = diff_contracts(orders, orders)
    assert diff.is_empty
    assert not diff.breaking
    assert diff.render() == "sales.orders 1.2.0 → 1.2.0: no changes"


def test_an_added_column_is_not_breaking(orders: ProductContract) -> None:
    extra = Column(name="region", type="string", description="Sales region")
    diff = diff_contracts(orders, change(orders, version="1.3.0", columns=[*orders.columns, extra]))
    assert diff.columns_added == ["region"]
    assert not diff.breaking
    assert "column 'region' added" in diff.render()


def test_a_removed_column_is_breaking(orders: ProductContract) -> None:
    new = change(orders, columns=[c for c in orders.columns if c.name != "ordered_at"], dimensions=[], quality=[])
    diff = diff_contracts(orders, new)
    assert diff.columns_removed == ["ordered_at"]
    assert diff.breaking
    assert diff.breaking_reasons == ["column 'ordered_at' removed"]


def test_a_renamed_column_shows_as_removed_plus_added_and_is_breaking(orders: ProductContract) -> None:
    columns = [c.model_copy(update={"name": "total"}) if c.name == "amount" else c for c in orders.columns]
    metrics = [Metric(name="revenue", expr="sum(total)", description="Gross")]
    new = change(orders, columns=columns, metrics=metrics, policy=orders.policy.model_copy(update={"row_filters": []}))
    diff = diff_contracts(orders, new)
    assert (diff.columns_removed, diff.columns_added) == (["amount"], ["total"])
    assert diff.breaking
    assert any("rename" in reason for reason in diff.breaking_reasons)
    assert diff.metrics_changed == ["revenue"]


def test_a_retyped_column_is_breaking_and_named(orders: ProductContract) -> None:
    diff = diff_contracts(orders, change(orders, columns=with_column(orders, "amount", type="float")))
    assert [(c.column, c.old, c.new) for c in diff.columns_retyped] == [("amount", "decimal", "float")]
    assert diff.breaking_reasons == ["column 'amount' retyped decimal → float"]


def test_a_changed_primary_key_is_breaking(orders: ProductContract) -> None:
    diff = diff_contracts(orders, change(orders, primary_key=["order_id"], quality=[]))
    assert diff.primary_key_changed
    assert diff.breaking


def test_description_policy_metric_and_other_field_changes_are_listed(orders: ProductContract) -> None:
    policy = Policy(
        access=["role:analyst", "role:finance"],
        masking=[MaskingRule(columns=["customer_email"], method="redact")],
    )
    new = change(
        orders,
        version="1.3.0",
        columns=with_column(orders, "amount", description="Line total excl. VAT"),
        metrics=[*orders.metrics, Metric(name="orders", expr="count(distinct order_id)", description="Orders")],
        policy=policy,
        owner={"team": "sales-data", "email": "orders@example.org"},
        tags=["sales"],
    )
    diff = diff_contracts(orders, new)
    assert not diff.breaking
    assert [(c.column, c.field) for c in diff.column_changes] == [("amount", "description")]
    assert diff.metrics_added == ["orders"]
    assert "access granted to role:finance" in diff.policy_changes
    assert "access withdrawn from role:sales" in diff.policy_changes
    assert "row filter removed for role:sales-eu: amount > 0" in diff.policy_changes
    assert "masking added: customer_email (redact)" in diff.policy_changes
    assert {f.path for f in diff.field_changes} == {"owner.email", "tags"}
    rendered = diff.render()
    assert rendered.splitlines()[0] == "sales.orders 1.2.0 → 1.3.0: compatible"
    assert "owner.email: 'sales-data@example.org' → 'orders@example.org'" in rendered


def test_the_summary_is_one_line_and_shortens_long_change_lists(orders: ProductContract) -> None:
    extra = [Column(name=f"c{i}", type="string", description="x") for i in range(6)]
    summary = diff_contracts(orders, change(orders, columns=[*orders.columns, *extra])).summary()
    assert "\n" not in summary
    assert summary.endswith("and 2 more")


def test_semver_parses_and_refuses_malformed_versions() -> None:
    assert parse_semver("10.2.3") == (10, 2, 3)
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        parse_semver("1.2")


def test_version_refusal_explains_which_version_would_be_accepted(orders: ProductContract) -> None:
    retyped = diff_contracts(
        orders, change(orders, version="1.3.0", columns=with_column(orders, "amount", type="float"))
    )
    message = version_refusal("1.2.0", "1.3.0", retyped)
    assert message is not None
    assert "column 'amount' retyped decimal → float" in message
    assert "2.0.0" in message
    assert version_refusal("1.2.0", "2.0.0", retyped) is None

    retitled = diff_contracts(orders, change(orders, title="Orders"))
    same = version_refusal("1.2.0", "1.2.0", retitled)
    assert same is not None and "bump the version (e.g. 1.3.0)" in same
    lower = version_refusal("1.2.0", "1.1.9", retitled)
    assert lower is not None and "lower than the latest registered version 1.2.0" in lower
    assert version_refusal("1.2.0", "1.2.1", retitled) is None
