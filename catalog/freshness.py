"""Freshness: how old a product's data is, measured against its SLA.

A product's ``as_of`` is the one timestamp :func:`freshness_sql` returns: ``max(<column>)`` over the
product, where the column is ``sla.freshness_column`` or else the column of its ``freshness`` check,
or the value of the SELECT in ``sla.loaded_at``. The statement is generic SQL over the product name,
built with sqlglot (``loaded_at`` is the contract's own text); the caller guards and rewrites it like
``run_sql``. :func:`assess` turns the measured value into a :class:`Freshness` at a given moment:

* ``fresh`` — ``as_of`` is within the SLA (``sla.freshness``, else the freshness check's ``max_age``);
* ``stale`` — it is older; ``sla.on_stale`` says whether reads warn or are refused;
* ``unknown`` — it cannot be told, and ``reason`` says why (no SLA, nothing to measure, no rows,
  a value that is not a timestamp, or a store that failed).

Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlglot import exp

from catalog.contract import ProductContract, parse_duration
from catalog.timestamps import format_age, to_utc

__all__ = [
    "Freshness",
    "FreshnessState",
    "assess",
    "freshness_column",
    "freshness_sla",
    "freshness_sql",
    "stale_message",
]

FreshnessState = Literal["fresh", "stale", "unknown"]


@dataclass(frozen=True)
class Freshness:
    """A product's freshness at ``now``: ``as_of`` (aware UTC) when measured, its age, SLA and state."""

    product: str
    state: FreshnessState
    as_of: datetime | None = None
    age_s: float | None = None
    sla: str | None = None
    on_stale: Literal["warn", "refuse"] = "warn"
    reason: str | None = None

    @property
    def age(self) -> str | None:
        return None if self.age_s is None else format_age(self.age_s)


def freshness_column(contract: ProductContract) -> str | None:
    """The column whose maximum is the product's ``as_of``: ``sla.freshness_column``, else the freshness check's."""
    if contract.sla.freshness_column:
        return contract.sla.freshness_column
    return next((q.column for q in contract.quality if q.check == "freshness" and q.column), None)


def freshness_sla(contract: ProductContract) -> str | None:
    """The promised maximum age: ``sla.freshness``, else the ``max_age`` of the freshness check."""
    if contract.sla.freshness:
        return contract.sla.freshness
    return next((q.max_age for q in contract.quality if q.check == "freshness" and q.max_age), None)


def freshness_sql(contract: ProductContract) -> str | None:
    """The SELECT over product names whose first value is ``as_of``; None when nothing says how to measure it."""
    if contract.sla.loaded_at:
        return contract.sla.loaded_at
    column = freshness_column(contract)
    if column is None:
        return None
    maximum = exp.Max(this=exp.column(exp.to_identifier(column, quoted=True))).as_("as_of")
    return exp.select(maximum).from_(exp.to_table(contract.name)).sql()


def assess(contract: ProductContract, measured: object, *, now: datetime, failure: str | None = None) -> Freshness:
    """The product's freshness at ``now`` (aware UTC) given the ``measured`` as_of value.

    ``failure`` says why nothing could be measured (the store failed, the statement was refused).
    """
    sla = freshness_sla(contract)
    base = {"product": contract.name, "sla": sla, "on_stale": contract.sla.on_stale}
    if failure is not None:
        return Freshness(state="unknown", reason=failure, **base)  # type: ignore[arg-type]
    if not (contract.sla.loaded_at or freshness_column(contract)):  # what freshness_sql needs, without building it
        reason = "nothing to measure: the contract has no freshness check, sla.freshness_column or sla.loaded_at"
        return Freshness(state="unknown", reason=reason, **base)  # type: ignore[arg-type]
    try:
        as_of = to_utc(measured)
    except ValueError as exc:
        return Freshness(state="unknown", reason=f"as_of not measurable: {exc}", **base)  # type: ignore[arg-type]
    age_s = max((now - as_of).total_seconds(), 0.0)
    if sla is None:
        reason = "no freshness SLA (sla.freshness) to compare with"
        return Freshness(state="unknown", as_of=as_of, age_s=age_s, reason=reason, **base)  # type: ignore[arg-type]
    state: FreshnessState = "stale" if age_s > parse_duration(sla).total_seconds() else "fresh"
    return Freshness(state=state, as_of=as_of, age_s=age_s, **base)  # type: ignore[arg-type]


def stale_message(contract: ProductContract, freshness: Freshness) -> str:
    """What a reader of a stale product is told: when it was last updated, the SLA and whom to ask."""
    owner = contract.owner.team + (f" <{contract.owner.email}>" if contract.owner.email else "")
    updated = f"{freshness.as_of:%Y-%m-%d %H:%M} UTC" if freshness.as_of else "at an unknown time"
    return (
        f"{contract.name} is stale: last updated {updated} ({freshness.age} ago), its SLA is {freshness.sla}; "
        f"ask the owner {owner} to refresh it"
    )
