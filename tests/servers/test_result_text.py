"""A tool result's text content: its structured content, compact, read back exactly."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from servers.result_text import read_result_text, result_text

pytestmark = pytest.mark.anyio

AWKWARD = [
    None,
    "",
    "null",
    "NULL",
    "None",
    "true",
    "False",
    "1",
    "-1.5",
    "0012",
    "1e5",
    "nan",
    "Infinity",
    "-",
    "a,b",
    'say "hi"',
    '"',
    "line\nbreak",
    "cr\r",
    "tab\there",
    "para\u2028graph",
    "next\x85line",
    "nbsp\xa0",
    " padded",
    "padded ",
    "[not a list]",
    "{not: an object}",
    "ü und ß, 東京",
    "plain words",
    "2025-12-01 05:11:20",
    0,
    -7,
    2**63,
    1.0,
    -0.0,
    1e16,
    2.5e-07,
    True,
    False,
    [1, None, "a,b"],
    {"k": [1, 2], "q": '"'},
]


def same(a: Any, b: Any) -> bool:
    """Equal values of equal JSON types (1 is not 1.0, True is not 1)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {
        "columns": columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": False,
        "next_cursor": None,
        "warnings": ["note, with a comma\nand a line"],
        "freshness": [{"product": "shop.orders", "state": "fresh"}],
    }


def test_awkward_values_read_back_as_the_same_values_and_types() -> None:
    columns = ["value", "", "null", "a,b", "1"]
    structured = table(columns, [[value, value, "x", None, value] for value in AWKWARD])
    text = result_text(structured)
    assert same(read_result_text(text), structured)
    # one line for the other keys, one for the column names, one per row
    assert len(text.splitlines()) == 2 + len(AWKWARD)


def test_null_empty_and_the_word_null_read_differently() -> None:
    text = result_text(table(["a", "b", "c"], [[None, "", "null"]]))
    assert text.splitlines()[-1] == ',"","null"'
    assert read_result_text(text)["rows"] == [[None, "", "null"]]


def test_a_one_column_row_of_null_is_an_empty_line() -> None:
    structured = table(["a"], [[None], ["x"], [None]])
    assert result_text(structured).split("\n")[2:] == ["", "x", ""]
    assert same(read_result_text(result_text(structured)), structured)


def test_a_result_that_is_not_a_table_is_its_json_compact() -> None:
    structured = {"products": [{"name": "shop.orders", "tags": ["a", "b"]}], "columns": "not a list"}
    text = result_text(structured)
    assert text == '{"products":[{"name":"shop.orders","tags":["a","b"]}],"columns":"not a list"}'
    assert read_result_text(text) == structured
    ragged = {"columns": ["a", "b"], "rows": [[1]]}
    assert json.loads(result_text(ragged)) == ragged
    # not plain JSON (structured content never is, but the text must not fail a call that succeeded)
    assert json.loads(result_text({"columns": ["a"], "rows": [[float("nan")]]})) == {"columns": ["a"], "rows": [[None]]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@settings(deadline=None, max_examples=300)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda width: st.tuples(
            st.lists(st.text(), min_size=width, max_size=width),
            st.lists(st.lists(json_values, min_size=width, max_size=width), max_size=5),
        )
    )
)
def test_every_table_of_json_values_reads_back_exactly(shape: tuple[list[str], list[list[Any]]]) -> None:
    columns, rows = shape
    structured = table(columns, rows)
    text = result_text(structured)
    assert same(read_result_text(text), structured)
    assert len(text.split("\n")) == 2 + len(rows)


async def test_a_100_row_result_costs_at_most_0_6_of_the_indented_json_and_reads_back(sam: Client) -> None:
    result = await sam.call_tool("query_product", {"product": "shop.orders", "limit": 100})
    assert not result.is_error and result.structured_content is not None
    structured = result.structured_content
    assert structured["row_count"] == 100
    [content] = result.content
    text = getattr(content, "text", "")
    # the text content before: the structured content as indented JSON (the SDK's default)
    indented = pydantic_core.to_json(structured, indent=2).decode()
    assert len(text) / 4 <= 0.6 * len(indented) / 4
    assert same(read_result_text(text), structured)


async def test_every_tool_result_text_reads_back_as_its_structured_content(sam: Client) -> None:
    calls = {
        "search_products": {"query": "orders"},
        "describe_product": {"product": "shop.customers"},
        "run_sql": {"sql": "select region, count(*) as n from shop.orders group by region order by region"},
        "query_metrics": {"metrics": ["shop.customers.customer_count"], "group_by": [{"dimension": "country"}]},
    }
    for tool, arguments in calls.items():
        result = await sam.call_tool(tool, arguments)
        assert not result.is_error, (tool, result.content)
        [content] = result.content
        assert same(read_result_text(getattr(content, "text", "")), result.structured_content), tool


async def test_an_error_stays_one_line_of_text(sam: Client) -> None:
    result = await sam.call_tool("query_product", {"product": "shop.ordrs"})
    assert result.is_error and result.structured_content is None
    [content] = result.content
    assert getattr(content, "text", "").startswith("not_found: ")
