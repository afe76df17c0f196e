"""Policy: what one principal may see of one product, decided once, as data.

:func:`govern` turns a contract and a principal into a :class:`GovernedView`: which columns are masked
(and how) and which row filters apply. :mod:`catalog.compile` and :mod:`catalog.sqlguard` build every
statement on top of the view's *governed source* (a subquery that masks and filters), so no tool
re-implements these rules.

Rules:

* ``policy.access`` lists the subjects who may read the product. An empty list grants nobody (fail
  closed): a product is public only when its owner writes ``access: ['*']``.
* A row filter applies when the principal matches its ``when`` subject; all that apply are ANDed.
* A masking rule applies unless the principal matches one of its ``unless`` subjects. When several
  rules mask one column, the strictest method wins (``null`` > ``redact`` > ``hash`` > ``partial``).
* An aggregate-only rule applies unless the principal matches one of its ``unless`` subjects: its
  columns are *aggregate-only* (raw values never leave the store; aggregates over groups of at least
  ``min_group_size`` rows do). When several rules name one column, the largest size wins.
* Deprecated products stay readable; the service layer adds the warning.

Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog.contract import MaskMethod, ProductContract
from catalog.errors import AccessDeniedError, InsufficientScopeError
from catalog.principal import Principal

__all__ = ["MASK_STRICTNESS", "GovernedView", "can_read", "govern"]

#: Higher is stricter: what is left of the raw value after masking.
MASK_STRICTNESS: dict[str, int] = {"partial": 0, "hash": 1, "redact": 2, "null": 3}


@dataclass(frozen=True)
class GovernedView:
    """A product as one principal may read it.

    ``masked`` maps each masked column to its method; ``row_filters`` holds the SQL conditions (over
    the physical columns, in contract order) that every visible row satisfies; ``aggregate_only`` maps
    each aggregate-only column to the smallest group whose aggregates over it may be returned.
    """

    contract: ProductContract
    principal: Principal
    masked: dict[str, MaskMethod] = field(default_factory=dict)
    row_filters: list[str] = field(default_factory=list)
    aggregate_only: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def columns(self) -> list[str]:
        """Every column the principal sees (masked ones included, with their masked values)."""
        return self.contract.column_names

    def column_type(self, name: str) -> str:
        """The type of a column as the principal sees it: masked columns are strings.

        Raises:
            KeyError: the product has no such column.
        """
        column = self.contract.column(name)
        if column is None:
            raise KeyError(name)
        return "string" if name in self.masked else column.type


def can_read(contract: ProductContract, principal: Principal) -> bool:
    """True when the product's access list names the principal (``*``, its name or one of its roles) and
    the principal's access token, if any, carries the scopes the product needs."""
    return principal.matches(list(contract.policy.access)) and not principal.missing_scopes(contract.name)


def govern(contract: ProductContract, principal: Principal) -> GovernedView:
    """What ``principal`` may see of ``contract``: masked columns and the row filters that apply.

    Raises:
        AccessDeniedError: the principal matches no subject of ``policy.access``; the message names who
            has access, and ``reason`` says why this principal does not.
        InsufficientScopeError: the policy grants access, but the principal's access token lacks a scope
            the product needs (``auth.product_scopes``).
    """
    policy = contract.policy
    missing = principal.missing_scopes(contract.name)
    if missing and principal.matches(list(policy.access)):
        reason = f"the access token lacks scope(s) {' '.join(missing)}"
        raise InsufficientScopeError(
            f"access to {contract.name} denied: {reason}; sign in again asking for scope={' '.join(missing)!r}",
            product=contract.name,
            reason=reason,
        )
    if not can_read(contract, principal):
        who = ", ".join(policy.access) if policy.access else "nobody (policy.access is empty)"
        roles = ", ".join(sorted(principal.roles)) or "no roles"
        reason = f"principal {principal.name!r} ({roles}) matches none of the access subjects"
        raise AccessDeniedError(
            f"access to {contract.name} denied: readable by {who}; {reason}. Ask the owner "
            f"({contract.owner.team}) for one of those roles.",
            product=contract.name,
            reason=reason,
        )
    masked: dict[str, MaskMethod] = {}
    for rule in policy.masking:
        if principal.matches(rule.exempt):
            continue
        for column in rule.columns:
            current = masked.get(column)
            if current is None or MASK_STRICTNESS[rule.method] > MASK_STRICTNESS[current]:
                masked[column] = rule.method
    aggregate_only: dict[str, int] = {}
    for agg in policy.aggregate_only:
        if principal.matches(agg.exempt):
            continue
        for column in agg.columns:
            aggregate_only[column] = max(aggregate_only.get(column, 0), agg.min_group_size)
    row_filters = [rf.where for rf in policy.row_filters if principal.matches(rf.when)]
    return GovernedView(
        contract=contract, principal=principal, masked=masked, row_filters=row_filters, aggregate_only=aggregate_only
    )
