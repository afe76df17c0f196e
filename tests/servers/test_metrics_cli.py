"""``dataproducts metrics list`` and ``metrics query``, run in-process on the registered demo workspace."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from catalog.errors import InvalidRequestError
from servers.cli import app
from servers.cli.metrics_cmds import parse_condition
from servers.demo import DemoWorkspace

runner = CliRunner()


def run(demo: DemoWorkspace, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(demo.config_path), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_metrics_list_prints_a_products_metrics_and_what_they_group_by(demo: DemoWorkspace) -> None:
    code, output = run(demo, "metrics", "list", "--product", "shop.orders", "--as", "sam")
    assert code == 0, output
    assert "shop.orders.delivery_rate" in output and "status = 'delivered'" in output
    assert "order_time (hour, day, week, month, quarter, year)" in output and "shop.customers.country" in output


def test_metrics_query_prints_the_groups_the_time_range_and_the_sql(demo: DemoWorkspace) -> None:
    code, output = run(
        demo,
        "metrics",
        "query",
        "shop.orders.order_count",
        "shop.orders.delivered_orders",
        "--by",
        "order_time:quarter",
        "--by",
        "region",
        "--where",
        "channel in web,mobile_app",
        "--from",
        "2025-01-01",
        "--to",
        "2026-01-01",
        "--order",
        "-shop.orders.order_count",
        "--as",
        "ana",
        "--explain",
    )
    assert code == 0, output
    assert "order_time (quarter)" in output and "EU" in output and "US" not in output.split("SQL")[0]
    assert "order_time in [2025-01-01, 2026-01-01)" in output
    assert "governed shop.orders" in output


def test_metrics_query_reports_an_unknown_metric_with_a_suggestion_and_exits_1(demo: DemoWorkspace) -> None:
    code, output = run(demo, "metrics", "query", "shop.orders.order_cnt", "--as", "ana")
    assert code == 1
    assert "did you mean 'order_count'?" in output


def test_where_options_read_as_dimension_operator_value() -> None:
    assert parse_condition("region = EU") == {"dimension": "region", "op": "=", "value": "EU"}
    assert parse_condition("status in delivered, shipped") == {
        "dimension": "status",
        "op": "in",
        "value": ["delivered", "shipped"],
    }
    assert parse_condition("amount >= 10.5")["value"] == 10.5
    assert parse_condition("region is_null") == {"dimension": "region", "op": "is_null"}
    with pytest.raises(InvalidRequestError, match="operators"):
        parse_condition("region equals EU")
