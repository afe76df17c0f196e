"""Products that need an OAuth scope: readable only with it, on top of the policy, never instead of it."""

from __future__ import annotations

import pytest

from catalog.errors import AccessDeniedError, InsufficientScopeError
from catalog.policy import can_read, govern
from catalog.principal import Principal
from tests.catalog.governance_fixtures import ANALYST, OUTSIDER, contract

NEEDS_PII = (("crm.*", ("crm:pii",)), ("shop.orders", ("shop:read",)))


def scoped(principal: Principal, *scopes: str) -> Principal:
    return principal.model_copy(update={"scopes": frozenset(scopes), "product_scopes": NEEDS_PII})


def test_a_token_lacking_the_products_scope_cannot_read_it_and_is_told_which_scope() -> None:
    analyst = scoped(ANALYST, "openid")
    assert analyst.missing_scopes("crm.people") == ["crm:pii"]
    assert not can_read(contract(), analyst)
    with pytest.raises(InsufficientScopeError, match="scope='crm:pii'") as info:
        govern(contract(), analyst)
    assert (info.value.code, info.value.product) == ("insufficient_scope", "crm.people")


def test_the_scope_adds_nothing_the_policy_does_not_grant() -> None:
    assert can_read(contract(), scoped(ANALYST, "crm:pii"))
    outsider = scoped(OUTSIDER, "crm:pii")
    assert not can_read(contract(), outsider)
    with pytest.raises(AccessDeniedError) as info:
        govern(contract(), scoped(OUTSIDER))  # no scope either: the policy's refusal, not a scope hint
    assert info.value.code == "access_denied"


def test_a_principal_without_a_token_is_not_scope_limited() -> None:
    assert ANALYST.scopes is None and ANALYST.missing_scopes("crm.people") == []
    assert govern(contract(), ANALYST).masked
