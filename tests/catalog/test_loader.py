from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.errors import ContractError, ContractProblem
from catalog.loader import (
    dump_contract,
    load_contract,
    load_contract_file,
    load_contracts,
    load_file,
    parse_contracts,
)

FIXTURES = Path(__file__).parent / "fixtures"

MINIMAL = """\
name: sales.orders
version: 1.0.0
title: Orders
description: One row per order.
owner: {team: sales}
source: {connection: shop, table: orders}
columns:
  - {name: order_id, type: integer, description: Order number}
"""


def problems_of(text: str) -> list[ContractProblem]:
    with pytest.raises(ContractError) as info:
        parse_contracts(text, file="c.yaml")
    return info.value.problems


def by_path(problems: list[ContractProblem]) -> dict[str, ContractProblem]:
    return {p.path: p for p in problems}


def test_a_valid_contract_loads_and_remembers_the_line_of_each_field() -> None:
    [loaded] = load_file(FIXTURES / "orders.yaml")
    assert loaded.contract.name == "sales.orders"
    assert loaded.contract.columns[2].pii == "email"
    assert loaded.line_of("columns[2].type") == 12
    assert loaded.line_of("policy.masking[0].columns") == 26
    assert loaded.line_of("columns[2].no_such_field") == 12  # falls back to the nearest written ancestor


def test_every_problem_of_a_file_is_reported_with_file_line_path_and_hint() -> None:
    with pytest.raises(ContractError) as info:
        load_file(FIXTURES / "many_problems.yaml")
    problems = by_path(info.value.problems)
    assert set(problems) == {
        "name",
        "version",
        "owner.phone",
        "columns[1].type",
        "columns[2].description",
        "policy.masking[0].method",
        "sla.on_stale",
    }
    assert all(p.file == str(FIXTURES / "many_problems.yaml") for p in problems.values())
    assert [p.line for p in info.value.problems] == [1, 2, 5, 10, 11, 16, 17]
    assert "many_problems.yaml:10: columns[1].type" in str(info.value)


def test_an_unknown_literal_lists_the_allowed_values_and_the_closest_one() -> None:
    problem = by_path(problems_of(MINIMAL.replace("type: integer", "type: int")))["columns[0].type"]
    assert problem.line == 8
    assert "'int' is not an allowed value" in problem.message
    assert problem.hint is not None
    assert problem.hint.startswith("did you mean 'integer'?")
    assert "string, integer, float, decimal, boolean, date, timestamp, time, json, bytes" in problem.hint


def test_an_unknown_key_lists_the_allowed_keys_of_that_object() -> None:
    text = MINIMAL.replace("description: Order number}", "description: Order number, nulable: false}")
    problem = by_path(problems_of(text))["columns[0].nulable"]
    assert problem.message == "unknown key 'nulable'"
    assert problem.hint == "did you mean 'nullable'? allowed keys: name, type, description, unit, pii, nullable"


def test_a_misspelt_top_level_key_is_unknown_and_its_field_missing() -> None:
    text = MINIMAL.replace("owner: {team: sales}", "owner: sales").replace("columns:", "colums:")
    problems = by_path(problems_of(text))
    assert problems["colums"].hint is not None and problems["colums"].hint.startswith("did you mean 'columns'?")
    assert problems["columns"].message == "required field 'columns' is missing"
    assert problems["owner"].message == "expected a mapping, got str 'sales'"
    assert problems["owner"].hint == "write a mapping with keys: team, email"


def test_a_missing_field_is_reported_as_required_at_its_parent_line() -> None:
    text = MINIMAL.replace("owner: {team: sales}\n", "")
    problem = by_path(problems_of(text))["owner"]
    assert problem.message == "required field 'owner' is missing"
    assert problem.line == 1
    assert problem.hint is not None and "add 'owner:'" in problem.hint


def test_a_number_where_text_is_expected_suggests_quoting() -> None:
    problem = by_path(problems_of(MINIMAL.replace("version: 1.0.0", "version: 1.0")))["version"]
    assert problem.hint is not None and "float 1.0" in problem.hint and "quotes" in problem.hint


def test_a_value_failing_a_union_is_reported_once() -> None:
    text = MINIMAL + "policy:\n  masking: [{columns: [order_id], unless: pii-reader}]\n"
    problems = problems_of(text)
    assert [p.path for p in problems] == ["policy.masking[0].unless"]
    assert problems[0].hint == "write '*', 'role:<name>' or 'principal:<name>'"


def test_reference_problems_are_reported_each_at_its_own_line() -> None:
    with pytest.raises(ContractError) as info:
        load_file(FIXTURES / "bad_references.yaml")
    problems = by_path(info.value.problems)
    assert problems["primary_key"].line == 7
    assert problems["primary_key"].hint == "did you mean 'order_id'?"
    assert problems["metrics[0].expr"].line == 12
    assert "amount_eur" in problems["metrics[0].expr"].message
    assert problems["policy.masking[0].columns"].line == 15


def test_a_yaml_syntax_error_is_reported_with_its_line() -> None:
    problems = problems_of(MINIMAL + "tags: [sales, revenue\nlineage: {}\n")
    assert len(problems) == 1
    assert problems[0].message.startswith("not valid YAML")
    assert problems[0].line in (9, 10)


def test_a_duplicated_key_is_reported_instead_of_silently_overwritten() -> None:
    problems = problems_of(MINIMAL + "title: Orders again\n")
    assert [(p.path, p.line) for p in problems] == [("title", 9)]
    assert "first on line 3" in problems[0].message


def test_a_document_that_is_not_a_mapping_is_reported() -> None:
    problems = problems_of("- just\n- a list\n")
    assert problems[0].message == "a contract is a YAML mapping, not list"


def test_an_empty_file_holds_no_contract() -> None:
    assert problems_of("# nothing here\n")[0].message == "no contract found"


def test_several_documents_in_one_file_load_as_several_contracts() -> None:
    contracts = load_contract_file(FIXTURES / "two_products.yaml")
    assert [c.name for c in contracts] == ["crm.customers", "crm.segments"]
    assert load_file(FIXTURES / "two_products.yaml")[1].line_of("columns[1].name") == 21


def test_problems_in_later_documents_carry_their_absolute_line() -> None:
    text = MINIMAL + "---\n" + MINIMAL.replace("type: integer", "type: intger")
    problems = problems_of(text)
    assert [(p.path, p.line) for p in problems] == [("columns[0].type", 17)]


def test_load_contract_refuses_a_file_with_two_contracts() -> None:
    with pytest.raises(ContractError, match="holds 2 contracts"):
        load_contract(FIXTURES / "two_products.yaml")


def test_load_contracts_collects_the_problems_of_every_file_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(MINIMAL, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yml").write_text(MINIMAL.replace("type: integer", "type: int"), encoding="utf-8")
    (tmp_path / "worse.yaml").write_text(MINIMAL.replace("version: 1.0.0", "version: one"), encoding="utf-8")
    with pytest.raises(ContractError) as info:
        load_contracts(tmp_path)
    assert sorted(Path(p.file or "").name for p in info.value.problems) == ["bad.yml", "worse.yaml"]
    (tmp_path / "sub" / "bad.yml").unlink()
    (tmp_path / "worse.yaml").unlink()
    assert [c.contract.name for c in load_contracts([tmp_path])] == ["sales.orders"]


def test_an_unreadable_file_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_located_problems_get_the_file_and_line_of_their_path() -> None:
    [loaded] = load_file(FIXTURES / "orders.yaml")
    located = loaded.locate(ContractProblem(message="not in source", path="columns[3].name"))
    assert (located.file, located.line) == (str(FIXTURES / "orders.yaml"), 13)


def test_dump_contract_round_trips_and_keeps_the_model_key_order() -> None:
    contract = load_contract(FIXTURES / "orders.yaml")
    text = dump_contract(contract)
    assert [c.contract for c in parse_contracts(text)] == [contract]
    assert list(yaml.safe_load(text))[:6] == ["name", "version", "title", "description", "owner", "tags"]
    assert "nullable" not in text  # defaults are left out
    assert "nullable: true" in dump_contract(contract, include_defaults=True)
    assert dump_contract(contract) == text  # stable


@settings(deadline=None)
@given(
    title=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
        str.strip
    ),
    description=st.text(min_size=1, max_size=80).filter(str.strip),
)
def test_dump_contract_round_trips_any_title_and_description(title: str, description: str) -> None:
    contract = load_contract(FIXTURES / "orders.yaml").model_copy(update={"title": title, "description": description})
    assert parse_contracts(dump_contract(contract))[0].contract == contract
