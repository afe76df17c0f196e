"""``dataproducts lineage``: the operator's view of where a product's data comes from and goes.

Every registered product is shown (no principal, no policy): the tree of upstream and/or downstream
products and source tables, each hop labelled with how it is known (declared in a contract, derived
from sources), the columns it links and the PII it carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from catalog.errors import DataProductsError
from catalog.lineage import Direction, LineageEdge, LineageGraph, LineageNode
from connectors import connector_for
from servers.cli._common import console, reporting_errors, state
from servers.settings import Settings

__all__ = ["register_commands"]

#: Column links shown per hop before the rest is summarised.
_SHOWN_LINKS = 6


def register_commands(app: typer.Typer) -> None:
    app.command("lineage")(reporting_errors(lineage))


def lineage(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product name, e.g. shop.orders")],
    direction: Annotated[Direction, typer.Option(help="upstream, downstream or both")] = "both",
    depth: Annotated[int, typer.Option(min=1, max=10, help="hops to walk")] = 3,
) -> None:
    """Print a product's lineage as a tree: products, source tables, column links, PII carried."""
    registry = state(ctx).registry()
    try:
        registry.get(product)  # NotFoundError naming close matches
        contracts = registry.list_contracts()
        graph = registry.lineage_graph(
            dialects=_dialects(state(ctx).settings, {c.source.connection for c in contracts})
        )
    finally:
        registry.close()
    console.print(lineage_tree(graph.around(product, direction, depth), product, direction, depth))


def _dialects(settings: Settings, connections: Iterable[str]) -> dict[str, str]:
    """The sqlglot dialect of each configured connection (unconfigured ones are left to the default)."""
    found = {}
    for name in connections:
        try:
            found[name] = connector_for(settings.connection(name)).dialect
        except DataProductsError:
            continue
    return found


def lineage_tree(graph: LineageGraph, product: str, direction: Direction, depth: int) -> Tree:
    """``graph`` (cut around ``product``) as a rich tree: an upstream and/or a downstream branch."""
    root = Tree(_node_label(graph.nodes[product]))
    if direction in ("upstream", "both"):
        _grow(root.add("[bold]▲ upstream[/]"), graph, product, upstream=True, depth=depth, path=(product,))
    if direction in ("downstream", "both"):
        _grow(root.add("[bold]▼ downstream[/]"), graph, product, upstream=False, depth=depth, path=(product,))
    return root


def _grow(branch: Tree, graph: LineageGraph, node: str, *, upstream: bool, depth: int, path: tuple[str, ...]) -> None:
    if depth == 0:
        return
    hops = [e for e in graph.edges if (e.target if upstream else e.source) == node]
    for edge in sorted(hops, key=lambda e: e.source if upstream else e.target):
        other = edge.source if upstream else edge.target
        label = f"{_node_label(graph.nodes[other])}  {_edge_label(edge)}"
        if other in path:
            branch.add(label + "  [dim](cycle)[/]")
            continue
        _grow(branch.add(label), graph, other, upstream=upstream, depth=depth - 1, path=(*path, other))


def _node_label(node: LineageNode) -> str:
    name = escape(node.id)
    label = f"[cyan]{name}[/] [dim](table)[/]" if node.kind == "table" else f"[bold]{name}[/]"
    if node.pii:
        tags = ", ".join(f"{escape(c)}:{'/'.join(k)}" for c, k in node.pii.items())
        label += f"  [red]PII {tags}[/]"
    if node.carried_pii:
        untagged = ", ".join(f"{escape(c)}:{'/'.join(k)}" for c, k in node.carried_pii.items())
        label += f"  [yellow]untagged PII {untagged}[/]"
    return label


def _edge_label(edge: LineageEdge) -> str:
    how = "+".join(kind for kind, on in (("declared", edge.declared), ("derived", edge.derived)) if on)
    parts = [f"[dim]{how}[/]"]
    if edge.columns is None:
        parts.append("[dim]columns not known[/]")
    else:
        links = [f"{escape(link.target)} ← {escape(link.source)}" for link in edge.columns]
        more = f", … {len(links) - _SHOWN_LINKS} more" if len(links) > _SHOWN_LINKS else ""
        if links:
            parts.append(", ".join(links[:_SHOWN_LINKS]) + more)
    linked = {link.source for link in edge.columns or []}
    also = [c for c in edge.reads if c not in linked]
    if also:
        parts.append(f"{'also ' if linked else ''}reads {', '.join(escape(c) for c in also)}")
    if edge.pii:
        maybe = " (may carry)" if edge.columns is None else ""
        parts.append(f"[red]⚠ PII {', '.join(edge.pii)}{maybe}[/]")
    if edge.note and edge.note.startswith("table level"):
        parts.append(f"[dim]{escape(edge.note)}[/]")
    return "  ".join(parts)
