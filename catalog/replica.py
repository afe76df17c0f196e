"""The ``replicas:`` section of a product contract: an analytical copy of the source we keep in step.

A product whose source of truth is an OLTP store (SQLite, PostgreSQL) may declare an analytical
replica: a DuckDB table that ``dataproducts sync`` (or ``serve``, on the replica's ``sync.every``)
refreshes from the source, and that the router answers aggregates and metrics from while its lag is
within ``max_lag``::

    replicas:
      analytical:
        refresh: incremental          # full | incremental (rows whose cursor moved, upserted by primary key)
        cursor: updated_at            # incremental: a column every insert and update advances
        max_lag: 15m                  # older than this: reads go to the source, and say why
        deletes: {full_compare_every: 10}   # or {soft_delete_column: deleted_at}
        masked_at_rest: false         # true: the replica stores the contract's masks, never a raw value
        sync: {every: 15m}            # serve refreshes it on this schedule

Deletes: an incremental run sees inserts and updates only. ``full_compare_every: N`` compares the
whole primary key set with the source every Nth run and drops the keys the source no longer has;
``soft_delete_column`` declares that the source never deletes rows, it marks them (and advances the
cursor), so the upsert carries the mark and no comparison is needed.

Pure models and checks, no I/O; :func:`replica_problems` runs with the contract's other cross-field checks.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from catalog._model import StrictModel

if TYPE_CHECKING:
    from catalog.contract import MaskMethod, ProductContract

__all__ = [
    "AnalyticalReplica",
    "ReplicaDeletes",
    "ReplicaSchedule",
    "Replicas",
    "at_rest_masks",
    "columns_digest",
    "replica_problems",
]


def _checked_duration(text: str) -> str:
    from catalog.contract import parse_duration  # the contract module imports this one

    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_checked_duration)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


def at_rest_masks(contract: ProductContract) -> dict[str, MaskMethod]:
    """The masks a ``masked_at_rest`` replica stores: every masking rule that does not exempt everybody
    (``unless: '*'``), the strictest method per column, as :func:`catalog.policy.govern` picks it."""
    from catalog.policy import MASK_STRICTNESS  # the policy module imports the contract module

    masks: dict[str, MaskMethod] = {}
    for rule in contract.policy.masking:
        if "*" in rule.exempt:
            continue
        for column in rule.columns:
            current = masks.get(column)
            if current is None or MASK_STRICTNESS[rule.method] > MASK_STRICTNESS[current]:
                masks[column] = rule.method
    return masks


class ReplicaDeletes(StrictModel):
    """How an incremental refresh learns of deleted rows: one of the two fields."""

    full_compare_every: int | None = Field(
        default=None, ge=1, description="compare every primary key with the source on every Nth run"
    )
    soft_delete_column: Identifier | None = Field(
        default=None, description="the source marks deleted rows in this column (and advances the cursor)"
    )

    @model_validator(mode="after")
    def _one_way(self) -> ReplicaDeletes:
        if (self.full_compare_every is None) == (self.soft_delete_column is None):
            raise ValueError("set exactly one of 'full_compare_every' (e.g. 10) or 'soft_delete_column'")
        return self


class ReplicaSchedule(StrictModel):
    every: Duration = Field(description="how often serve refreshes the replica, e.g. 15m")


class AnalyticalReplica(StrictModel):
    """A DuckDB copy of the product's rows (one table in a DuckDB file per refresh generation)."""

    store: Literal["duckdb"] = "duckdb"
    refresh: Literal["full", "incremental"] = "full"
    cursor: Identifier | None = Field(default=None, description="incremental: the column inserts and updates advance")
    max_lag: Duration = Field(default="15m", description="the oldest replica reads may use, e.g. 15m")
    deletes: ReplicaDeletes | None = None
    masked_at_rest: bool = Field(default=False, description="store masked values only (the contract's masks)")
    sync: ReplicaSchedule | None = None


class Replicas(StrictModel):
    analytical: AnalyticalReplica | None = None


def replica_problems(contract: ProductContract) -> list[tuple[str, str]]:
    """Cross-field problems of ``contract.replicas`` as ``(field path, message)``."""
    replica = contract.replicas.analytical if contract.replicas else None
    if replica is None:
        return []
    path = "replicas.analytical"
    names = contract.column_names
    problems: list[tuple[str, str]] = []
    masked = at_rest_masks(contract) if replica.masked_at_rest else {}

    def column(field: str, name: str | None, *, wanted: str) -> None:
        if name is None:
            return
        if name not in names:
            problems.append((f"{path}.{field}", f"unknown column {name!r}; declared columns are {names}"))
        elif name in masked:
            problems.append((f"{path}.{field}", f"{name!r} is masked at rest and cannot serve as {wanted}"))

    column("cursor", replica.cursor, wanted="the refresh cursor")
    if replica.deletes is not None:
        column("deletes.soft_delete_column", replica.deletes.soft_delete_column, wanted="the soft-delete mark")
    if replica.cursor is not None:
        declared = contract.column(replica.cursor)
        if declared is not None and declared.type in ("json", "bytes", "boolean"):
            problems.append(
                (f"{path}.cursor", f"{replica.cursor!r} is {declared.type}; a cursor must be an orderable column")
            )
    if replica.refresh == "incremental":
        if replica.cursor is None:
            problems.append((f"{path}.cursor", "incremental refresh needs a cursor column, e.g. cursor: updated_at"))
        if not contract.primary_key:
            problems.append(
                ("primary_key", "incremental refresh upserts by primary key: declare primary_key, or use refresh: full")
            )
        if replica.deletes is None:
            problems.append(
                (
                    f"{path}.deletes",
                    "incremental refresh cannot see deleted rows by itself: set deletes: {full_compare_every: 10} "
                    "or deletes: {soft_delete_column: <column>}",
                )
            )
    elif replica.cursor is not None or replica.deletes is not None:
        problems.append((path, "cursor and deletes belong to refresh: incremental; a full refresh copies every row"))
    problems.extend(
        (f"{path}.masked_at_rest", f"primary key column {key!r} is masked; a replica keys rows by it")
        for key in contract.primary_key
        if key in masked
    )
    return problems


def columns_digest(contract: ProductContract) -> str:
    """What a replica's layout depends on: the source it reads, the columns, their types, the primary key and
    the masks at rest.

    A replica built for another digest is rebuilt in full by the next sync, and not read until then.
    """
    replica = contract.replicas.analytical if contract.replicas else None
    masks = at_rest_masks(contract) if replica is not None and replica.masked_at_rest else {}
    layout = {
        "columns": [(c.name, c.type) for c in contract.columns],
        "key": contract.primary_key,
        "masks": sorted(masks.items()),
        "source": contract.source.model_dump(mode="json"),  # another table or query: other rows
    }
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode("utf-8")).hexdigest()
