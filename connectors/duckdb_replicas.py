"""One DuckDB engine over several products' replica files: joins across stores.

A ``run_sql`` statement over several products runs where fresh copies of all of them live: each
product's replica file is attached read-only under its own catalog name (``r_<digest>``), and the
statement's governed sources read ``r_<digest>.replica`` — so a PostgreSQL product and a SQLite product
(or any two sources) join through their DuckDB replicas.

The driver-level guardrails are those of :class:`~connectors.duckdb.DuckDBConnector` (it is one):
every file attached read-only, no other file readable (``allowed_paths`` empty), external access off,
configuration locked, one SELECT per statement, a timeout. Physical names inside governed sources are
qualified with their catalog and schema, as the DuckDB connector does for its own tables.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path

import duckdb
from sqlglot import exp

from catalog.errors import ConnectorUnavailableError
from connectors.base import ConnectionConfig
from connectors.duckdb import _DRIVER_CONFIG, DuckDBConnector, _literal

__all__ = ["replica_slug", "DuckDBReplicaSet", "replica_catalog"]


def replica_catalog(product: str) -> str:
    """The catalog name a product's replica file is attached under (``replica_shop__orders``): audit rows
    name the replica read as ``replica_shop__orders.main.replica``."""
    return "replica_" + replica_slug(product)


def replica_slug(product: str) -> str:
    """``product`` as one name, one to one: ``_`` written ``_5f`` first, then ``.`` written ``__``, so
    ``crm__eu.people`` and ``crm.eu__people`` get different folders and catalogs."""
    return product.replace("_", "_5f").replace(".", "__")


class DuckDBReplicaSet(DuckDBConnector):
    """Read-only DuckDB over replica files (catalog name → file), each attached under its catalog name."""

    def __init__(self, name: str, files: Mapping[str, str]) -> None:
        """Nothing is opened until first use."""
        first = next(iter(files.values()))
        super().__init__(ConnectionConfig(name=name, kind="duckdb", path=first))
        self._path = None  # every table lives in an attached catalog; none is the default
        self._attached = dict(files)

    def _open(self) -> duckdb.DuckDBPyConnection:
        tmp = tempfile.mkdtemp(prefix="dataproducts-replicas-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        try:
            conn = duckdb.connect(str(Path(tmp) / "empty.duckdb"), config=_DRIVER_CONFIG)
        except BaseException:
            self._cleanup()
            raise
        try:
            for catalog, path in self._attached.items():
                if not Path(path).is_file():
                    raise ConnectorUnavailableError(f"replica file {path!r} does not exist; sync the product")
                conn.execute(f"ATTACH {_literal(path)} AS {catalog} (READ_ONLY)")
            conn.execute("SET allowed_paths = []")
            conn.execute("SET allowed_directories = []")
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
        except BaseException:
            conn.close()
            self._cleanup()
            raise
        return conn

    def _qualify(self, table: exp.Table) -> str:
        """``"replica_shop__orders"."main"."replica"`` for a replica table named ``replica_shop__orders.replica``."""
        if not table.catalog and table.db in self._attached:
            table.set("catalog", exp.to_identifier(table.db, quoted=True))
            table.set("db", exp.to_identifier("main", quoted=True))
        return ".".join(part.name for part in table.parts)
