"""Store connectors: one contract (:mod:`connectors.base`), one module per store.

Connectors are found by ``kind`` through the entry-point group ``dataproducts.connectors``; the
built-in ones (``sqlite``, ``postgresql``, ``duckdb``) register there exactly as a third-party
package would::

    [project.entry-points."dataproducts.connectors"]
    clickhouse = "my_package.clickhouse:ClickHouseConnector"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from catalog.errors import ConfigError
from connectors.base import (
    Capabilities,
    ConnectionConfig,
    Connector,
    GovernedRelation,
    IntrospectedColumn,
    Prepared,
    TableSchema,
    estimate_row_bytes,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capabilities",
    "ConnectionConfig",
    "Connector",
    "GovernedRelation",
    "IntrospectedColumn",
    "Prepared",
    "TableSchema",
    "connector_for",
    "estimate_row_bytes",
    "known_kinds",
]

ENTRY_POINT_GROUP = "dataproducts.connectors"


def _registered() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def known_kinds() -> list[str]:
    """The connection kinds installed connectors serve, sorted."""
    return sorted(_registered())


def connector_for(config: ConnectionConfig) -> Connector:
    """A new (not yet connected) connector for ``config.kind``.

    Raises:
        ConfigError: no installed connector serves that kind (the message lists those that do), its
            module cannot be imported (a missing optional driver), or its config is unusable.
    """
    registered = _registered()
    entry_point = registered.get(config.kind)
    if entry_point is None:
        raise ConfigError(
            f"connection {config.name!r}: unknown kind {config.kind!r}; known kinds are {', '.join(sorted(registered))}"
        )
    try:
        factory = entry_point.load()
    except ImportError as exc:
        raise ConfigError(
            f"connection {config.name!r}: the {config.kind!r} connector cannot be imported ({exc}); "
            f"install its driver, e.g. pip install 'dataproducts[{config.kind}]'"
        ) from exc
    if not (isinstance(factory, type) and issubclass(factory, Connector)):
        raise ConfigError(f"entry point {entry_point.value!r} for kind {config.kind!r} is not a Connector subclass")
    return factory(config)
