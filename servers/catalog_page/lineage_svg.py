"""Lay out a lineage graph for the page: one column per hop from the product, edges as curves.

The graph comes from ``get_lineage`` (already restricted to what the viewer may read). Upstream nodes
go left of the product, downstream nodes right, each in the column of its longest path from the
product; a column lists its nodes by name. The result is plain geometry; the template draws it as inline SVG (no
script, no external asset).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from servers.results import LineageResult

__all__ = ["LineageLayout", "PlacedEdge", "PlacedNode", "layout_lineage"]

NODE_W, NODE_H = 170, 38
GAP_X, GAP_Y = 48, 16
MARGIN = 12
MAX_LABEL = 24


@dataclass(frozen=True)
class PlacedNode:
    id: str
    label: str
    kind: str  # product | table
    x: int
    y: int
    focus: bool
    pii: bool
    title: str


@dataclass(frozen=True)
class PlacedEdge:
    source: str
    target: str
    path: str
    pii: bool
    title: str


@dataclass(frozen=True)
class LineageLayout:
    width: int
    height: int
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    node_w: int = NODE_W
    node_h: int = NODE_H


def _hops(result: LineageResult, focus: str) -> dict[str, int]:
    """Each node's signed column from ``focus``: negative upstream, positive downstream.

    Columns follow the longest path from (or to) the product, so an edge between two downstream (or two
    upstream) products always runs left to right; a cycle is cut after as many steps as there are nodes.
    """
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    for edge in result.edges:
        incoming.setdefault(edge.target, []).append(edge.source)
        outgoing.setdefault(edge.source, []).append(edge.target)
    downstream, upstream = _reached(outgoing, focus), _reached(incoming, focus)
    upstream -= downstream
    hops = {focus: 0, **dict.fromkeys(downstream, 1), **dict.fromkeys(upstream, -1)}
    for _ in range(len(result.nodes)):
        changed = False
        for edge in result.edges:
            s, t = edge.source, edge.target
            if t in downstream and (s in downstream or s == focus) and hops[t] < hops[s] + 1:
                hops[t], changed = hops[s] + 1, True
            if s in upstream and (t in upstream or t == focus) and hops[s] > hops[t] - 1:
                hops[s], changed = hops[t] - 1, True
        if not changed:
            break
    for info in result.nodes:
        hops.setdefault(info.id, 0)
    return hops


def _reached(index: dict[str, list[str]], start: str) -> set[str]:
    """The nodes reachable from ``start`` through ``index`` (``start`` itself excluded)."""
    seen, queue = {start}, deque([start])
    while queue:
        for other in index.get(queue.popleft(), []):
            if other not in seen:
                seen.add(other)
                queue.append(other)
    return seen - {start}


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def layout_lineage(result: LineageResult, focus: str) -> LineageLayout:
    """Positions for every node and a curve for every edge of ``result`` around ``focus``."""
    hops = _hops(result, focus)
    layers = sorted({hops[n.id] for n in result.nodes}) or [0]
    column = {hop: i for i, hop in enumerate(layers)}
    members: dict[int, list[str]] = {}
    for node in sorted(result.nodes, key=lambda n: n.id):
        members.setdefault(hops[node.id], []).append(node.id)
    tallest = max((len(m) for m in members.values()), default=1)
    height = 2 * MARGIN + tallest * NODE_H + (tallest - 1) * GAP_Y
    placed: dict[str, PlacedNode] = {}
    for node in result.nodes:
        layer = members[hops[node.id]]
        offset = (height - (len(layer) * NODE_H + (len(layer) - 1) * GAP_Y)) // 2
        pii_columns = sorted({*node.pii, *node.untagged_pii})
        title = node.id + (f" (PII: {', '.join(pii_columns)})" if pii_columns else "")
        placed[node.id] = PlacedNode(
            id=node.id,
            label=_label(node.id),
            kind=node.kind,
            x=MARGIN + column[hops[node.id]] * (NODE_W + GAP_X),
            y=offset + layer.index(node.id) * (NODE_H + GAP_Y),
            focus=node.id == focus,
            pii=bool(pii_columns),
            title=title,
        )
    edges = []
    for edge in result.edges:
        a, b = placed.get(edge.source), placed.get(edge.target)
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
        x2, y2 = b.x, b.y + NODE_H // 2
        if x2 <= x1:  # same column (or backwards): loop around the right side
            x2, bend = b.x + NODE_W, NODE_W // 2 + GAP_X // 2
            path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 + bend},{y2} {x2 + 6},{y2}"
        else:
            mid = (x1 + x2) // 2
            path = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}"
        kinds = ", ".join(edge.pii)
        title = f"{edge.source} → {edge.target}" + (f" (carries PII: {kinds})" if kinds else "")
        edges.append(PlacedEdge(source=edge.source, target=edge.target, path=path, pii=bool(edge.pii), title=title))
    width = 2 * MARGIN + len(layers) * NODE_W + (len(layers) - 1) * GAP_X
    return LineageLayout(width=width, height=height, nodes=list(placed.values()), edges=edges)
