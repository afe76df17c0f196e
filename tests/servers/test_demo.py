"""The demo workspace: valid contracts over real data, deterministic, never clobbering a user's folder."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.contract import ProductContract
from catalog.errors import ConfigError
from catalog.loader import load_contract_file
from catalog.registry import Registry
from catalog.validate import validate_against_source
from connectors import connector_for
from servers.demo import DEMO_PRINCIPALS, DemoWorkspace, build_demo_workspace
from servers.settings import Settings, load_settings

AS_OF = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    return build_demo_workspace(tmp_path_factory.mktemp("demo") / "workspace", as_of=AS_OF)


def _contracts(ws: DemoWorkspace) -> list[ProductContract]:
    return [ProductContract.model_validate(yaml.safe_load(p.read_text(encoding="utf-8"))) for p in ws.contract_paths]


def _query(settings: Settings, contract: ProductContract, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` (naming the product's table as ``t``) on the product's store with the store's own driver."""
    config = settings.connection(contract.source.connection)
    if config.kind == "sqlite":
        assert config.url is not None
        path = config.url.get_secret_value().removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        source = contract.source.query or f"SELECT * FROM {contract.source.table}"
        try:
            return conn.execute(f"WITH t AS ({source}) {sql}").fetchall()
        finally:
            conn.close()
    assert config.kind == "duckdb" and contract.source.table is not None
    with duckdb.connect() as dconn:
        source = config.files[contract.source.table]
        reader = {".csv": "read_csv", ".md": "read_text"}.get(Path(source).suffix, "read_parquet")
        return dconn.sql(f"WITH t AS (SELECT * FROM {reader}('{source}')) {sql}").fetchall()


def _columns(settings: Settings, contract: ProductContract) -> list[str]:
    config = settings.connection(contract.source.connection)
    if config.kind == "sqlite":
        assert config.url is not None
        path = config.url.get_secret_value().removeprefix("sqlite:///")
        source = contract.source.query or f"SELECT * FROM {contract.source.table}"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as probe:
            return [d[0] for d in probe.execute(f"SELECT * FROM ({source}) LIMIT 0").description]
    return [row[0] for row in _query(settings, contract, "SELECT column_name FROM (DESCRIBE SELECT * FROM t)")]


def test_every_demo_contract_validates_and_is_commented(demo: DemoWorkspace) -> None:
    names = [c.name for c in _contracts(demo)]
    assert len(names) == len(set(names))
    assert {"shop.customers", "shop.orders", "shop.order_lines", "analytics.order_facts"} <= set(names)
    assert all(p.read_text(encoding="utf-8").startswith("# ") for p in demo.contract_paths)


def test_every_declared_column_exists_in_the_built_stores(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    for contract in _contracts(demo):
        missing = set(contract.column_names) - set(_columns(settings, contract))
        assert not missing, f"{contract.name}: declared columns missing from the source: {sorted(missing)}"


def test_declared_primary_keys_are_unique_in_the_data(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    for contract in _contracts(demo):
        key = ", ".join(contract.primary_key)
        [(rows, keys)] = _query(
            settings, contract, f"SELECT (SELECT count(*) FROM t), count(*) FROM (SELECT DISTINCT {key} FROM t)"
        )
        assert rows >= 5 and keys == rows, f"{contract.name}: {key} is not a unique key"


def test_shop_orders_span_a_year_up_to_as_of_in_every_region(demo: DemoWorkspace) -> None:
    conn = sqlite3.connect(demo.path / "data" / "shop.db")
    try:
        first, last = conn.execute("SELECT min(ordered_at), max(ordered_at) FROM orders").fetchone()
        regions = {r for (r,) in conn.execute("SELECT DISTINCT region FROM orders")}
        bad_amounts = conn.execute(
            "SELECT count(*) FROM order_lines WHERE abs(amount - quantity * unit_price) > 0.005"
        ).fetchone()
        orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    end = AS_OF.replace(tzinfo=None)
    assert end - timedelta(days=366) < datetime.fromisoformat(first) < end - timedelta(days=360)
    assert end - timedelta(days=1) < datetime.fromisoformat(last) <= end
    assert regions == {"EU", "US", "APAC"}
    assert bad_amounts == (0,)
    assert orphans == []


def test_config_holds_token_hashes_only_and_maps_tokens_to_their_roles(demo: DemoWorkspace) -> None:
    text = demo.config_path.read_text(encoding="utf-8")
    settings = load_settings(demo.config_path)
    assert set(demo.tokens) == set(DEMO_PRINCIPALS) == {"ana", "sam"}
    for name, token in demo.tokens.items():
        assert token not in text
        principal = settings.principal_for_token(token)
        assert principal is not None and principal.name == name
        assert principal.roles == frozenset(DEMO_PRINCIPALS[name])
    assert settings.stdio_principal == "ana"
    assert len(settings.require_salt()) >= 32
    assert "one place" in text  # the inlined salt is explained


def test_tokens_file_is_private_and_lists_every_token(demo: DemoWorkspace) -> None:
    tokens_file = demo.path / ".dataproducts" / "demo-tokens.txt"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    lines = [
        line.split("\t") for line in tokens_file.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    assert dict(lines) == demo.tokens


def _data_snapshot(ws: DemoWorkspace) -> tuple[list[str], object, bytes]:
    conn = sqlite3.connect(ws.path / "data" / "shop.db")
    try:
        dump = list(conn.iterdump())
    finally:
        conn.close()
    facts = pq.read_table(ws.path / "data" / "analytics" / "order_facts.parquet")
    return dump, facts.to_pydict(), (ws.path / "data" / "analytics" / "daily_sales.csv").read_bytes()


def test_same_seed_builds_identical_data_with_fresh_secrets(demo: DemoWorkspace, tmp_path: Path) -> None:
    again = build_demo_workspace(tmp_path / "again", as_of=AS_OF)
    assert _data_snapshot(again) == _data_snapshot(demo)
    assert [p.read_bytes() for p in again.contract_paths] == [p.read_bytes() for p in demo.contract_paths]
    assert not set(again.tokens.values()) & set(demo.tokens.values())
    assert load_settings(again.config_path).require_salt() != load_settings(demo.config_path).require_salt()


def test_another_seed_builds_other_data(demo: DemoWorkspace, tmp_path: Path) -> None:
    other = build_demo_workspace(tmp_path / "other", seed=8, as_of=AS_OF)
    assert _data_snapshot(other)[0] != _data_snapshot(demo)[0]


def test_refuses_to_overwrite_a_folder_that_is_not_a_demo_workspace(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a dataproducts demo workspace"):
        build_demo_workspace(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_a_file_as_target(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file"):
        build_demo_workspace(target)


def test_rebuilding_a_demo_workspace_replaces_it_and_keeps_other_files(tmp_path: Path) -> None:
    first = build_demo_workspace(tmp_path, as_of=AS_OF)
    (tmp_path / "contracts" / "stale.yaml").write_text("name: x", encoding="utf-8")
    (tmp_path / "my-notes.md").write_text("keep me", encoding="utf-8")
    second = build_demo_workspace(tmp_path, as_of=AS_OF)
    assert sorted(p.name for p in (tmp_path / "contracts").iterdir()) == sorted(p.name for p in second.contract_paths)
    assert (tmp_path / "my-notes.md").read_text(encoding="utf-8") == "keep me"
    assert second.tokens != first.tokens
    assert load_settings(second.config_path).principal_for_token(first.tokens["ana"]) is None


def test_every_demo_contract_registers_and_matches_its_live_source(demo: DemoWorkspace, tmp_path: Path) -> None:
    settings = load_settings(demo.config_path, registry_url=f"sqlite:///{tmp_path / 'registry.db'}")

    async def problems_by_product() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with Registry.from_url(settings.resolved_registry_url()) as registry:
            for path in demo.contract_paths:
                for contract in load_contract_file(path):
                    assert registry.register(contract, actor="test").status == "created"
                    async with connector_for(settings.connection(contract.source.connection)) as connector:
                        problems = await validate_against_source(registry.get(contract.name), connector)
                    found[contract.name] = [f"{p.path}: {p.message}" for p in problems]
        return found

    found = anyio.run(problems_by_product)
    assert len(found) == len(demo.contract_paths)
    assert found == {name: [] for name in found}
