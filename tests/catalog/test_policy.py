"""Policy: who may read a product, which rows they see and which columns are masked for them."""

from __future__ import annotations

import pytest
import yaml

from catalog.contract import ProductContract
from catalog.errors import AccessDeniedError
from catalog.policy import GovernedView, can_read, govern
from catalog.principal import Principal
from tests.catalog.governance_fixtures import ANALYST, CONTRACT_YAML, EU_ANALYST, OUTSIDER, PII_READER, contract


def with_policy(policy: str, **extra: object) -> ProductContract:
    data = yaml.safe_load(CONTRACT_YAML)
    data["policy"] = yaml.safe_load(policy)
    data.update(extra)
    return ProductContract.model_validate(data)


def test_a_principal_holding_an_access_role_can_read() -> None:
    assert can_read(contract(), ANALYST)
    assert can_read(contract(), EU_ANALYST)


def test_a_principal_without_an_access_subject_is_denied_with_who_has_access() -> None:
    assert not can_read(contract(), OUTSIDER)
    with pytest.raises(AccessDeniedError) as info:
        govern(contract(), OUTSIDER)
    error = info.value
    assert error.code == "access_denied"
    assert error.product == "crm.people"
    assert "role:analyst, role:eu" in error.message
    assert "otto" in error.message and "marketing" in error.message
    assert error.reason is not None and "otto" in error.reason


def test_an_empty_access_list_grants_nobody() -> None:
    product = with_policy("{access: []}")
    assert not can_read(product, PII_READER)
    with pytest.raises(AccessDeniedError, match="nobody"):
        govern(product, PII_READER)


def test_star_and_principal_subjects_grant_access() -> None:
    assert can_read(with_policy("{access: ['*']}"), OUTSIDER)
    assert can_read(with_policy("{access: ['principal:otto']}"), OUTSIDER)
    assert not can_read(with_policy("{access: ['principal:otto']}"), ANALYST)


def test_masked_columns_follow_the_rules_for_a_principal_without_the_exempt_role() -> None:
    view = govern(contract(), ANALYST)
    assert view.masked == {"email": "hash", "phone": "partial", "full_name": "redact", "national_id": "null"}
    assert view.row_filters == []


def test_a_principal_matching_unless_sees_raw_values() -> None:
    assert govern(contract(), PII_READER).masked == {}


def test_row_filters_apply_only_to_matching_subjects() -> None:
    assert govern(contract(), EU_ANALYST).row_filters == ["region = 'EU'"]
    assert govern(contract(), PII_READER).row_filters == []


def test_all_row_filters_that_apply_are_kept() -> None:
    product = with_policy(
        """
        access: ['*']
        row_filters:
          - {when: role:eu, where: "region = 'EU'"}
          - {when: '*', where: "score IS NOT NULL"}
          - {when: role:other, where: "1 = 0"}
        """
    )
    assert govern(product, EU_ANALYST).row_filters == ["region = 'EU'", "score IS NOT NULL"]


def test_the_strictest_method_wins_when_rules_overlap() -> None:
    product = with_policy(
        """
        access: ['*']
        masking:
          - {columns: [email, phone], method: partial}
          - {columns: [email], method: hash, unless: role:pii}
          - {columns: [phone], method: "null", unless: role:analyst}
        """
    )
    assert govern(product, OUTSIDER).masked == {"email": "hash", "phone": "null"}
    assert govern(product, ANALYST).masked == {"email": "hash", "phone": "partial"}
    assert govern(product, PII_READER).masked == {"email": "partial", "phone": "partial"}


def test_deprecated_products_stay_readable() -> None:
    product = with_policy("{access: [role:analyst]}", deprecated=True, deprecation_note="use crm.persons")
    assert govern(product, ANALYST).contract.deprecated


def test_masked_columns_are_strings_in_the_view() -> None:
    view = govern(contract(), ANALYST)
    assert isinstance(view, GovernedView)
    assert view.column_type("email") == "string"
    assert view.column_type("national_id") == "string"
    assert view.column_type("amount") == "decimal"
    assert govern(contract(), PII_READER).column_type("amount") == "decimal"
    with pytest.raises(KeyError):
        view.column_type("nope")


def test_govern_is_a_pure_function_of_contract_and_principal() -> None:
    first = govern(contract(), EU_ANALYST)
    again = govern(contract(), Principal(name="eve", roles=frozenset({"eu"})))
    assert first == again
