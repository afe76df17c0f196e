"""connector_for: kinds resolve through the dataproducts.connectors entry points, built-ins included."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import SecretStr

from catalog.errors import ConfigError
from connectors import ENTRY_POINT_GROUP, ConnectionConfig, connector_for, known_kinds
from connectors.duckdb import DuckDBConnector
from connectors.postgresql import PostgreSQLConnector
from connectors.sqlite import SQLiteConnector


def test_the_built_in_kinds_are_registered_as_entry_points() -> None:
    assert {"sqlite", "postgresql", "duckdb"} <= set(known_kinds())


@pytest.mark.parametrize(
    ("config", "cls", "dialect"),
    [
        (ConnectionConfig(name="a", kind="sqlite", path="shop.sqlite"), SQLiteConnector, "sqlite"),
        (
            ConnectionConfig(name="b", kind="postgresql", url=SecretStr("postgresql://u@h/db")),
            PostgreSQLConnector,
            "postgres",
        ),
        (ConnectionConfig(name="c", kind="duckdb", path="lake.duckdb"), DuckDBConnector, "duckdb"),
    ],
    ids=["sqlite", "postgresql", "duckdb"],
)
@pytest.mark.anyio
async def test_connector_for_resolves_each_built_in_kind_to_its_connector_and_dialect(
    config: ConnectionConfig, cls: type, dialect: str
) -> None:
    connector = connector_for(config)
    try:
        assert type(connector) is cls
        assert (connector.kind, connector.dialect, connector.name) == (config.kind, dialect, config.name)
    finally:
        await connector.aclose()


def test_an_unknown_kind_is_a_config_error_listing_the_known_kinds() -> None:
    with pytest.raises(ConfigError, match=r"unknown kind 'mongodb'; known kinds are .*duckdb.*postgresql.*sqlite"):
        connector_for(ConnectionConfig(name="docs", kind="mongodb"))


def test_a_connector_whose_driver_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="elasticsearch", value="no_such_module_xyz:Connector", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr("connectors._registered", lambda: {"elasticsearch": broken})

    with pytest.raises(ConfigError, match=r"pip install 'dataproducts\[elasticsearch\]'"):
        connector_for(ConnectionConfig(name="search", kind="elasticsearch"))


def test_an_entry_point_that_is_not_a_connector_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = EntryPoint(name="odd", value="pathlib:Path", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr("connectors._registered", lambda: {"odd": odd})

    with pytest.raises(ConfigError, match="not a Connector subclass"):
        connector_for(ConnectionConfig(name="x", kind="odd", path=str(Path("x"))))
