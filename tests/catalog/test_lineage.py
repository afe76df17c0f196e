"""The lineage graph: declared and derived edges, column lineage of source queries, PII along edges."""

from __future__ import annotations

from typing import Any

from catalog.contract import ProductContract
from catalog.lineage import ColumnLink, LineageEdge, LineageGraph, build_lineage, render_impact


def product(
    name: str,
    columns: list[str | tuple[str, str]],
    *,
    table: str | None = None,
    query: str | None = None,
    connection: str = "shop",
    upstream: list[str] | None = None,
    downstream: list[str] | None = None,
) -> ProductContract:
    """A minimal contract; a column given as ``(name, pii)`` carries that PII tag."""
    source: dict[str, Any] = {"connection": connection, "table": table} if table else {"connection": connection}
    if query:
        source["query"] = query
    return ProductContract.model_validate(
        {
            "name": name,
            "version": "1.0.0",
            "title": name,
            "description": f"{name} for tests",
            "owner": {"team": "tests"},
            "source": source,
            "columns": [
                {"name": c, "type": "string", "description": c}
                if isinstance(c, str)
                else {"name": c[0], "type": "string", "description": c[0], "pii": c[1]}
                for c in columns
            ],
            "lineage": {"upstream": upstream or [], "downstream": downstream or []},
        }
    )


ORDERS = product("shop.orders", ["order_id", "customer_id", "amount", "region"], table="orders")
CUSTOMERS = product("crm.customers", ["id", ("email", "email"), ("full_name", "name"), "country"], table="customers")


def edge(graph: LineageGraph, source: str, target: str) -> LineageEdge:
    found = [e for e in graph.edges if (e.source, e.target) == (source, target)]
    assert found, f"no edge {source} -> {target}; edges: {[(e.source, e.target) for e in graph.edges]}"
    return found[0]


def links(found: LineageEdge) -> set[tuple[str, str]]:
    assert found.columns is not None, found.note
    return {(link.source, link.target) for link in found.columns}


def test_a_join_with_aliases_traces_each_output_column_to_its_table_and_product() -> None:
    enriched = product(
        "sales.enriched",
        ["order_id", "buyer_email", "doubled"],
        query=(
            "SELECT o.order_id, c.email AS buyer_email, o.amount * 2 AS doubled "
            "FROM orders AS o JOIN customers AS c ON c.id = o.customer_id WHERE c.country = 'DE'"
        ),
    )
    graph = build_lineage([ORDERS, CUSTOMERS, enriched])

    assert links(edge(graph, "shop:orders", "sales.enriched")) == {("order_id", "order_id"), ("amount", "doubled")}
    from_customers = edge(graph, "crm.customers", "sales.enriched")
    assert from_customers.derived and not from_customers.declared
    assert links(from_customers) == {("email", "buyer_email")}
    assert from_customers.pii == ["email"]
    assert from_customers.reads == ["country", "email", "id"]  # join key and filter too
    assert edge(graph, "shop.orders", "sales.enriched").pii == []
    assert graph.nodes["sales.enriched"].carried_pii == {"buyer_email": ["email"]}
    assert graph.nodes["shop:customers"].kind == "table"


def test_a_cte_is_traced_through_to_the_table_it_reads() -> None:
    totals = product(
        "sales.big_spenders",
        ["buyer", "total"],
        query=(
            "WITH big AS (SELECT customer_id, amount FROM orders WHERE amount > 100) "
            "SELECT customer_id AS buyer, sum(amount) AS total FROM big GROUP BY customer_id"
        ),
    )
    graph = build_lineage([ORDERS, totals])
    found = edge(graph, "shop.orders", "sales.big_spenders")
    assert links(found) == {("customer_id", "buyer"), ("amount", "total")}
    assert "big" not in {n.name for n in graph.nodes.values()}  # a CTE is not a table


def test_select_star_over_a_described_table_resolves_and_carries_its_pii() -> None:
    copy = product("crm.copy", ["id", "email", "full_name", "country"], query="SELECT * FROM customers")
    graph = build_lineage([CUSTOMERS, copy])
    found = edge(graph, "crm.customers", "crm.copy")
    assert links(found) == {(c, c) for c in ("id", "email", "full_name", "country")}
    assert found.pii == ["email", "name"]
    assert graph.nodes["crm.copy"].pii == {"email": ["email"], "full_name": ["name"]}
    assert graph.nodes["crm.copy"].carried_pii == {"email": ["email"], "full_name": ["name"]}


def test_select_star_over_an_undescribed_table_falls_back_to_a_table_level_edge_and_says_so() -> None:
    raw = product("ops.events", ["event_id", "payload"], query="SELECT * FROM raw_events")
    graph = build_lineage([raw])
    found = edge(graph, "shop:raw_events", "ops.events")
    assert found.columns is None
    assert found.note is not None and "table level only" in found.note and "event_id, payload" in found.note


def test_an_ambiguous_column_of_a_join_is_reported_not_guessed() -> None:
    joined = product("ops.joined", ["code"], query="SELECT code FROM a_table JOIN b_table ON a_table.k = b_table.k")
    found = edge(build_lineage([joined]), "shop:a_table", "ops.joined")
    assert found.columns is None and found.note is not None and "code" in found.note


def test_products_on_the_same_table_are_linked_and_share_pii_tags() -> None:
    tagged = product("crm.customers_eu", ["id", "email"], table="customers")  # forgot the pii tag
    graph = build_lineage([CUSTOMERS, tagged])
    assert links(edge(graph, "crm.customers", "crm.customers_eu")) == {("id", "id"), ("email", "email")}
    assert edge(graph, "crm.customers_eu", "crm.customers").derived
    assert graph.nodes["crm.customers_eu"].carried_pii == {"email": ["email"]}


def test_declared_edges_know_no_columns_and_may_carry_every_pii_of_their_upstream() -> None:
    report = product("crm.report", ["country"], table="report", upstream=["crm.customers", "crm.gone"])
    graph = build_lineage([CUSTOMERS, report])
    found = edge(graph, "crm.customers", "crm.report")
    assert found.declared and not found.derived and found.columns is None
    assert found.pii == ["email", "name"]
    assert "crm.gone" not in graph.nodes  # unregistered names are left out


def test_a_breaking_change_reaches_the_products_fed_by_its_columns_transitively() -> None:
    enriched = product(
        "sales.enriched",
        ["order_id", "region"],
        query="SELECT o.order_id, o.region FROM orders AS o JOIN customers AS c ON c.id = o.customer_id",
    )
    dashboard = product("sales.dashboard", ["region"], table="dashboard", upstream=["sales.enriched"])
    graph = build_lineage([ORDERS, CUSTOMERS, enriched, dashboard])

    impact = graph.downstream_impact("shop.orders", ["region"])
    assert [(i.product, i.depth, i.columns) for i in impact] == [
        ("sales.enriched", 1, ["region"]),
        ("sales.dashboard", 2, None),
    ]
    assert graph.downstream_impact("shop.orders", ["amount"]) == []  # no one reads amount
    by_key = graph.downstream_impact("crm.customers", ["id"])
    assert [(i.product, i.columns, i.reads) for i in by_key][0] == ("sales.enriched", [], ["id"])
    assert render_impact(by_key)[0] == "sales.enriched (via crm.customers; no column fed directly; its query reads id)"


def test_around_walks_one_direction_to_the_given_depth() -> None:
    middle = product("sales.middle", ["region"], table="middle", upstream=["shop.orders"])
    last = product("sales.last", ["region"], table="last", upstream=["sales.middle"])
    graph = build_lineage([ORDERS, middle, last])
    assert set(graph.around("sales.middle", "upstream", 1).nodes) == {"sales.middle", "shop.orders", "shop:middle"}
    assert set(graph.around("sales.middle", "downstream", 1).nodes) == {"sales.middle", "sales.last"}
    assert set(graph.around("shop.orders", "downstream", 1).nodes) == {"shop.orders", "sales.middle"}
    assert set(graph.around("shop.orders", "downstream", 2).nodes) == {"shop.orders", "sales.middle", "sales.last"}
    both = graph.around("sales.middle", "both", 1)
    assert {(e.source, e.target) for e in both.edges} == {
        ("shop.orders", "sales.middle"),
        ("shop:middle", "sales.middle"),
        ("sales.middle", "sales.last"),
    }


def test_restricted_keeps_readable_products_and_only_the_tables_they_are_built_from() -> None:
    enriched = product(
        "sales.enriched", ["email"], query="SELECT c.email FROM customers AS c JOIN orders AS o ON c.id = o.customer_id"
    )
    graph = build_lineage([ORDERS, CUSTOMERS, enriched]).restricted(lambda name: name != "crm.customers")
    assert set(graph.nodes) == {"shop.orders", "sales.enriched", "shop:orders", "shop:customers"}
    assert all("crm.customers" not in (e.source, e.target) for e in graph.edges)
    assert ColumnLink(source="email", target="email") in (edge(graph, "shop:customers", "sales.enriched").columns or [])


def test_a_restricted_table_keeps_pii_tags_only_of_the_columns_readable_products_use() -> None:
    names = product("crm.names", ["id", "full_name"], query="SELECT id, full_name FROM customers")
    graph = build_lineage([CUSTOMERS, names]).restricted(lambda name: name == "crm.names")
    assert graph.nodes["shop:customers"].pii == {"full_name": ["name"]}  # not the email of crm.customers
    assert graph.nodes["crm.names"].pii == {"full_name": ["name"]}
