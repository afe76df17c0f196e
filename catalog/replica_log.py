"""The replica log: every refresh of every analytical replica, kept in the registry's database.

One row per run (table ``dp_replica_syncs``): the product and contract version, how it ran (``full``
or ``incremental``) and ended (``ok`` or ``failed``), the replica file it produced, the moment it
began reading the source (``as_of``: the replica holds the source's state of then), the cursor
watermark, the rows held, copied and removed, and how long it took. Rows are only ever added.

The newest ``ok`` row *is* the current replica: writing it is the one step that switches readers
from the previous file to the new one, so a run that dies before it leaves the previous replica
serving (:meth:`ReplicaLog.current`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from catalog._registry_tables import replica_syncs, write_transaction
from catalog.errors import ConnectorError
from catalog.registry import Registry

__all__ = ["ReplicaLog", "ReplicaSync"]


class ReplicaSync(BaseModel):
    """One refresh run of one product's analytical replica."""

    product: str
    version: str
    store: str = "duckdb"
    mode: Literal["full", "incremental"]
    status: Literal["ok", "failed"]
    path: str | None = None
    as_of: AwareDatetime | None = None
    watermark: Any = None
    rows: int | None = None
    changed: int | None = None
    deleted: int | None = None
    runs_since_compare: int | None = None
    masked_at_rest: bool = False
    columns_digest: str | None = None
    duration_ms: float
    message: str | None = None
    synced_at: AwareDatetime


class ReplicaLog:
    """Replica runs in the registry database; shares the registry's engine."""

    def __init__(self, store: Engine | Registry) -> None:
        self.engine = store.engine if isinstance(store, Registry) else store

    def record(self, run: ReplicaSync) -> None:
        """Write ``run``; an ``ok`` run becomes the product's current replica in the same commit.

        Raises:
            ConnectorError: the registry database refused the write.
        """
        row = run.model_dump()
        row["watermark"] = None if run.watermark is None else json.dumps(run.watermark, default=str)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(replica_syncs.insert(), row)
        except SQLAlchemyError as exc:
            raise ConnectorError(f"could not record the replica run in the registry: {type(exc).__name__}") from exc

    def current(self, product: str) -> ReplicaSync | None:
        """The newest successful run of ``product``: the replica readers use (None: never synced)."""
        query = select(replica_syncs).where(replica_syncs.c.product == product, replica_syncs.c.status == "ok")
        found = self._read(query.order_by(replica_syncs.c.id.desc()).limit(1))
        return found[0] if found else None

    def history(self, product: str, *, limit: int = 20) -> list[ReplicaSync]:
        """The newest ``limit`` runs of ``product`` (failed ones included), newest first."""
        query = select(replica_syncs).where(replica_syncs.c.product == product)
        return self._read(query.order_by(replica_syncs.c.id.desc()).limit(limit))

    def _read(self, query: Any) -> list[ReplicaSync]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise ConnectorError(f"could not read replica runs from the registry: {type(exc).__name__}") from exc
        runs = []
        for row in rows:
            data = {k: v for k, v in row.items() if k != "id"}
            data["watermark"] = None if data["watermark"] is None else json.loads(data["watermark"])
            runs.append(ReplicaSync.model_validate(data))
        return runs
