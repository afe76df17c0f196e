"""The lineage graph's layout on the catalog page: upstream left, downstream right, edges left to right."""

from __future__ import annotations

from servers.catalog_page.lineage_svg import layout_lineage
from servers.results import LineageEdgeInfo, LineageNodeInfo, LineageResult


def _graph(edges: list[tuple[str, str]], *, pii: dict[str, list[str]] | None = None) -> LineageResult:
    names = sorted({n for edge in edges for n in edge})
    nodes = [
        LineageNodeInfo(
            id=n, kind="table" if ":" in n else "product", pii={"email": ["email"]} if n in (pii or {}) else {}
        )
        for n in names
    ]
    return LineageResult(
        nodes=nodes,
        edges=[LineageEdgeInfo(source=s, target=t, declared=True, derived=False, columns=None) for s, t in edges],
    )


def test_every_edge_runs_left_to_right_even_between_two_downstream_products() -> None:
    graph = _graph(
        [
            ("db:orders", "shop.orders"),
            ("shop.orders", "shop.lines"),
            ("shop.orders", "facts"),
            ("shop.lines", "facts"),
            ("crm.people", "shop.orders"),
        ]
    )
    layout = layout_lineage(graph, "shop.orders")
    x = {n.id: n.x for n in layout.nodes}
    assert all(x[e.source] < x[e.target] for e in layout.edges)
    assert x["db:orders"] == x["crm.people"] < x["shop.orders"] < x["shop.lines"] < x["facts"]
    assert [n.id for n in layout.nodes if n.focus] == ["shop.orders"]
    assert layout.width >= max(x.values()) + layout.node_w


def test_a_cycle_is_laid_out_and_terminates() -> None:
    layout = layout_lineage(_graph([("a", "b"), ("b", "c"), ("c", "a")]), "a")
    assert {n.id for n in layout.nodes} == {"a", "b", "c"}
    assert len(layout.edges) == 3


def test_a_lonely_product_is_one_node_and_pii_is_flagged() -> None:
    graph = LineageResult(nodes=[LineageNodeInfo(id="x.y", kind="product", pii={"email": ["email"]})], edges=[])
    layout = layout_lineage(graph, "x.y")
    (node,) = layout.nodes
    assert node.focus and node.pii and "PII: email" in node.title
    assert layout.edges == []


def test_long_names_are_shortened_on_the_label_but_kept_whole_in_the_title() -> None:
    long = "analytics.a_very_long_product_name_indeed"
    layout = layout_lineage(_graph([("x.y", long)]), "x.y")
    node = next(n for n in layout.nodes if n.id == long)
    assert node.label.endswith("…") and len(node.label) <= 26
    assert node.title == long
