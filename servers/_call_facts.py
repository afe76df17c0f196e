"""What governance applied to the call being served: the facts a trace span reports.

The boundary that serves a tool call or resource read opens a :func:`collecting` scope; the service
notes, where it decides, what it decided: each product view the policy built for the caller
(:func:`note_view`: contract version, row filters, masked and aggregate-only columns), each store
that answered (:func:`note_store`) and each product's freshness state (:func:`note_freshness`). Outside
a scope (CLI, operator use cases) noting does nothing. The facts live in a context variable, so they
follow the call into the SDK's handler like the audit scope does (see :mod:`servers._audit_trail`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from catalog.audit import AuditRecord
from catalog.policy import GovernedView

__all__ = [
    "CallFacts",
    "Decision",
    "collecting",
    "note_audit_failure",
    "note_freshness",
    "note_store",
    "note_view",
    "note_views",
]

Decision = Literal["allowed", "denied", "filtered", "masked"]

#: Freshness states from best to worst: a call touching several products reports its worst.
_FRESHNESS_ORDER = ("fresh", "unknown", "stale")


@dataclass
class CallFacts:
    """The governance of one call, as noted by the code that applied it."""

    versions: dict[str, str] = field(default_factory=dict)  # product -> contract version
    row_filters: int = 0
    masked: set[str] = field(default_factory=set)  # "product.column"
    aggregate_only: set[str] = field(default_factory=set)  # "product.column"
    stores: list[str] = field(default_factory=list)  # connector kinds, in order of first use
    freshness: dict[str, str] = field(default_factory=dict)  # product -> fresh | stale | unknown
    #: The row that could not be written and the code the call then failed with (``audit_failed``, ...).
    unaudited: tuple[AuditRecord, str] | None = None

    def decision(self, outcome: str) -> Decision:
        """What the policy did to the call: ``denied`` (refused for the caller's identity), ``filtered``
        (rows left out by a row filter), ``masked`` (masked or aggregate-only columns), else ``allowed``.

        A call both filtered and masked is ``filtered``; its masked columns are reported beside it.
        """
        if outcome == "denied":
            return "denied"
        if self.row_filters:
            return "filtered"
        if self.masked or self.aggregate_only:
            return "masked"
        return "allowed"

    @property
    def worst_freshness(self) -> str | None:
        states = set(self.freshness.values())
        return next((s for s in reversed(_FRESHNESS_ORDER) if s in states), None)


_facts: ContextVar[CallFacts | None] = ContextVar("dataproducts_call_facts", default=None)


@contextmanager
def collecting() -> Iterator[CallFacts]:
    """Collect the facts noted until the block ends."""
    facts = CallFacts()
    token = _facts.set(facts)
    try:
        yield facts
    finally:
        _facts.reset(token)


def note_view(view: GovernedView) -> None:
    """The policy built ``view`` for the caller (its filters and masks apply to what the call reads)."""
    facts = _facts.get()
    if facts is None:
        return
    name = view.contract.name
    if name not in facts.versions:
        facts.row_filters += len(view.row_filters)
    facts.versions[name] = view.contract.version
    facts.masked.update(f"{name}.{column}" for column in view.masked)
    facts.aggregate_only.update(f"{name}.{column}" for column in view.aggregate_only)


def note_views(views: Iterable[GovernedView]) -> None:
    for view in views:
        note_view(view)


def note_store(kind: str) -> None:
    """A store of this connector ``kind`` (sqlite, postgresql, duckdb, …) serves the call."""
    facts = _facts.get()
    if facts is not None and kind not in facts.stores:
        facts.stores.append(kind)


def note_audit_failure(record: AuditRecord, code: str) -> None:
    """``record`` could not be written: the call fails with ``code`` whatever the row said."""
    facts = _facts.get()
    if facts is not None:
        facts.unaudited = (record, code)


def note_freshness(product: str, state: str) -> None:
    """The call read ``product`` in this freshness ``state``."""
    facts = _facts.get()
    if facts is not None:
        facts.freshness[product] = state
