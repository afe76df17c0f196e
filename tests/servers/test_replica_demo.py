"""The demo's shop orders get a DuckDB replica, synced by `dataproducts sync`, and aggregates are answered from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
from typer.testing import CliRunner

from catalog.loader import load_contract_file
from catalog.metric_query import MetricsRequest
from catalog.principal import Principal
from catalog.registry import Registry
from servers.cli import app
from servers.demo import build_demo_workspace
from servers.results import MetricsResult
from servers.service import DataProductsService
from servers.settings import load_settings

ANALYST = Principal(name="sam", roles=frozenset({"analyst"}))


def test_the_demo_answers_order_counts_from_the_synced_replica(tmp_path: Path) -> None:
    workspace = build_demo_workspace(tmp_path / "ws")
    settings = load_settings(workspace.config_path)
    with Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace) as registry:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="tests")
    result = CliRunner().invoke(app, ["--config", str(workspace.config_path), "sync"])
    assert result.exit_code == 0, result.output
    assert "shop.orders" in result.output and "full" in result.output
    listing = CliRunner().invoke(app, ["--config", str(workspace.config_path), "replicas"])
    assert listing.exit_code == 0 and "ok full" in listing.output, listing.output
    with sqlite3.connect(workspace.path / "data" / "shop.db") as conn:
        (orders,) = conn.execute("SELECT count(*) FROM orders").fetchone()
    request = MetricsRequest.model_validate(
        {"metrics": ["order_count"], "product": "shop.orders", "group_by": [{"dimension": "region"}]}
    )

    async def ask() -> MetricsResult:
        async with DataProductsService.open(settings) as service:
            return await service.query_metrics(ANALYST, request)

    answer = anyio.run(ask)
    assert answer.store["name"] == "replica", answer.store
    assert sum(row[-1] for row in answer.rows) == orders
