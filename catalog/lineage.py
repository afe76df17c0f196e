"""The lineage graph of the catalog: declared and derived edges between products and physical tables.

Nodes are products (by name) and the physical tables products are built from (``connection:table``).
Edges run from what feeds to what is fed:

* **declared**: a contract's ``lineage.upstream`` / ``lineage.downstream`` names (product level: the
  columns involved are not known);
* **derived** from sources on one connection: a table feeds the product whose ``source.table`` it
  is (column for column); a ``source.query`` is traced column by column
  (:mod:`catalog._query_lineage`) onto the tables it reads and onto the products whose source is
  such a table; products with the same ``source.table`` are linked both ways (one table, two faces).
  When some output column of the query cannot be traced, its edges are table level (their columns
  are not known) and their note says which columns and why.

PII travels along the edges: a column's ``pii`` tag (from its contract, or from the contracts whose
source is that table) is carried to every column it feeds, transitively, so a derived column that
its own contract does not tag still shows what it holds (``carried_pii``). An edge lists the PII
kinds it carries; an edge whose columns are not known may carry any PII of its upstream, and lists it.

The graph is built from the latest contracts (:func:`build_lineage`); :meth:`LineageGraph.around`
cuts the part around one product, :meth:`LineageGraph.restricted` keeps only what a reader may see,
and :meth:`LineageGraph.downstream_impact` names the products a change of some columns reaches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from catalog._model import FrozenModel
from catalog._query_lineage import derive_query_lineage, table_key
from catalog.contract import ProductContract

__all__ = [
    "ColumnLink",
    "Direction",
    "DownstreamImpact",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "build_lineage",
    "render_impact",
]

Direction = Literal["upstream", "downstream", "both"]


class LineageNode(FrozenModel):
    id: str = Field(description="product name, or connection:table for a physical table")
    kind: Literal["product", "table"]
    name: str
    connection: str | None = None
    pii: dict[str, list[str]] = Field(default_factory=dict, description="column → PII kinds it holds")
    carried_pii: dict[str, list[str]] = Field(
        default_factory=dict, description="column → PII kinds fed into it that its contract does not tag"
    )


class ColumnLink(FrozenModel):
    source: str
    target: str


class LineageEdge(FrozenModel):
    source: str
    target: str
    declared: bool = False
    derived: bool = False
    columns: list[ColumnLink] | None = Field(default=None, description="None: only table level is known")
    reads: list[str] = Field(default_factory=list, description="upstream columns a query reads in any clause")
    pii: list[str] = Field(default_factory=list, description="PII kinds this edge carries (or may carry)")
    note: str | None = None


class DownstreamImpact(FrozenModel):
    product: str
    depth: int
    via: str
    columns: list[str] | None = Field(default=None, description="the product's columns involved; None: not known")
    reads: list[str] = Field(
        default_factory=list, description="changed upstream columns its query reads elsewhere than in its output"
    )


class LineageGraph(FrozenModel):
    nodes: dict[str, LineageNode]
    edges: list[LineageEdge]

    def _outgoing(self) -> dict[str, list[LineageEdge]]:
        index: dict[str, list[LineageEdge]] = {}
        for edge in self.edges:
            index.setdefault(edge.source, []).append(edge)
        return index

    def _incoming(self) -> dict[str, list[LineageEdge]]:
        index: dict[str, list[LineageEdge]] = {}
        for edge in self.edges:
            index.setdefault(edge.target, []).append(edge)
        return index

    def around(self, start: str, direction: Direction = "both", depth: int = 3) -> LineageGraph:
        """The nodes within ``depth`` hops of ``start`` upstream, downstream or both, and the edges walked."""
        nodes = {start} if start in self.nodes else set()
        edges: dict[tuple[str, str], LineageEdge] = {}
        walks = []
        if direction in ("upstream", "both"):
            walks.append((self._incoming(), "source"))
        if direction in ("downstream", "both"):
            walks.append((self._outgoing(), "target"))
        for index, far_end in walks:
            seen, frontier = {start}, [start]
            for _ in range(depth):
                reached = []
                for node in frontier:
                    for edge in index.get(node, []):
                        other = getattr(edge, far_end)
                        edges[(edge.source, edge.target)] = edge
                        if other not in seen:
                            seen.add(other)
                            reached.append(other)
                frontier = reached
            nodes |= seen & set(self.nodes)
        return LineageGraph(
            nodes={n: self.nodes[n] for n in sorted(nodes)},
            edges=[e for e in edges.values() if e.source in nodes and e.target in nodes],
        )

    def restricted(self, may_read: Callable[[str], bool]) -> LineageGraph:
        """Only the products ``may_read`` admits, and only the tables that are the source of one of them.

        Nothing of the others remains: no node, no edge, no name. A table keeps the PII tags of only
        the columns a kept product takes or reads from it (the others come from contracts of products
        that may not be readable).
        """
        products = {n for n, node in self.nodes.items() if node.kind == "product" and may_read(n)}
        tables = {e.source for e in self.edges if e.target in products and self.nodes[e.source].kind == "table"}
        kept = products | tables
        edges = [e for e in self.edges if e.source in kept and e.target in kept]
        used: dict[str, set[str]] = {}
        for edge in edges:
            used.setdefault(edge.source, set()).update(edge.reads, (link.source for link in edge.columns or []))
        nodes = {}
        for name in sorted(kept):
            node = self.nodes[name]
            if node.kind == "table":
                pii = {c: kinds for c, kinds in node.pii.items() if c in used.get(name, set())}
                node = node.model_copy(update={"pii": pii})
            nodes[name] = node
        return LineageGraph(nodes=nodes, edges=edges)

    def downstream_impact(self, product: str, columns: Iterable[str] | None) -> list[DownstreamImpact]:
        """The products a change of ``columns`` of ``product`` reaches, transitively, nearest first.

        ``columns`` None means the whole product (e.g. its primary key changed). Where an edge's columns
        are known, only products fed by the changed columns, or whose query reads them in any clause
        (a join key, a filter), are reached, with their columns involved; where they are not, the
        product is listed with ``columns`` None. A product whose query reads a changed column counts as
        changed as a whole for the products further down.
        """
        outgoing = self._outgoing()
        start: frozenset[str] | None = None if columns is None else frozenset(c.lower() for c in columns)
        queue: deque[tuple[str, frozenset[str] | None, int]] = deque([(product, start, 0)])
        found: dict[str, DownstreamImpact] = {}
        while queue:
            node, changed, depth = queue.popleft()
            for edge in outgoing.get(node, []):
                target = edge.target
                if target == product or target in found or self.nodes[target].kind != "product":
                    continue
                involved: frozenset[str] | None = None
                linked = {link.source for link in edge.columns or []}
                read = sorted(c for c in edge.reads if c not in linked and (changed is None or c.lower() in changed))
                if edge.columns is not None:
                    involved = frozenset(
                        link.target for link in edge.columns if changed is None or link.source.lower() in changed
                    )
                    if not involved and not read:
                        continue
                found[target] = DownstreamImpact(
                    product=target,
                    depth=depth + 1,
                    via=node,
                    columns=None if involved is None else sorted(involved),
                    reads=read,
                )
                further = None if involved is None or read else frozenset(c.lower() for c in involved)
                queue.append((target, further, depth + 1))
        return sorted(found.values(), key=lambda i: (i.depth, i.product))


def render_impact(impacts: list[DownstreamImpact]) -> list[str]:
    """One line per affected downstream product: its name, through which product, the columns involved."""
    lines = []
    for impact in impacts:
        if impact.columns is None:
            columns = "columns not known"
        else:
            columns = f"columns {', '.join(impact.columns)}" if impact.columns else "no column fed directly"
        reads = f"; its query reads {', '.join(impact.reads)}" if impact.reads else ""
        lines.append(f"{impact.product} (via {impact.via}; {columns}{reads})")
    return lines


@dataclass
class _Draft:
    """An edge while the graph is built: what each source of evidence has said about it so far."""

    declared: bool = False
    derived: bool = False
    columns: list[ColumnLink] | None = None
    reads: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


class _Builder:
    """Mutable state while the graph is built: nodes' PII per column and edges by (source, target)."""

    def __init__(self) -> None:
        self.nodes: dict[str, LineageNode] = {}
        self.pii: dict[str, dict[str, set[str]]] = {}
        self.declared_pii: dict[str, dict[str, set[str]]] = {}
        self.edges: dict[tuple[str, str], _Draft] = {}

    def node(self, node: LineageNode) -> str:
        self.nodes.setdefault(node.id, node)
        self.pii.setdefault(node.id, {})
        self.declared_pii.setdefault(node.id, {})
        return node.id

    def tag(self, node: str, column: str, kind: str | None) -> None:
        if kind:
            self.pii[node].setdefault(column, set()).add(kind)
            self.declared_pii[node].setdefault(column, set()).add(kind)

    def edge(
        self,
        source: str,
        target: str,
        *,
        declared: bool = False,
        derived: bool = False,
        links: list[ColumnLink] | None = None,
        reads: Iterable[str] = (),
        note: str | None = None,
    ) -> None:
        """Record what one source of evidence says about ``source → target`` (merged with what others said)."""
        if source == target:
            return
        draft = self.edges.setdefault((source, target), _Draft())
        draft.declared |= declared
        draft.derived |= derived
        draft.reads |= set(reads)
        if links is not None:
            known = draft.columns or []
            draft.columns = known + [link for link in links if link not in known]
        if note and note not in draft.notes:
            draft.notes.append(note)

    def carry_pii(self) -> None:
        """Spread column PII along column links until nothing changes (cycles end: the sets only grow)."""
        changed = True
        while changed:
            changed = False
            for (source, target), draft in self.edges.items():
                for link in draft.columns or []:
                    kinds = self.pii[source].get(link.source, set())
                    have = self.pii[target].setdefault(link.target, set())
                    if not kinds <= have:
                        have |= kinds
                        changed = True

    def graph(self) -> LineageGraph:
        self.carry_pii()
        nodes = {}
        for node_id, node in sorted(self.nodes.items()):
            pii = {c: sorted(k) for c, k in sorted(self.pii[node_id].items()) if k}
            declared = self.declared_pii[node_id]
            carried = {c: sorted(set(k) - declared.get(c, set())) for c, k in pii.items()}
            carried = {c: k for c, k in carried.items() if k and node.kind == "product"}
            nodes[node_id] = node.model_copy(update={"pii": pii, "carried_pii": carried})
        edges = []
        for (source, target), draft in sorted(self.edges.items()):
            upstream = self.pii[source]
            if draft.columns is None:  # not known which columns: it may carry any PII of its upstream
                kinds = {k for ks in upstream.values() for k in ks}
            else:
                kinds = {k for link in draft.columns for k in upstream.get(link.source, set())}
            edges.append(
                LineageEdge(
                    source=source,
                    target=target,
                    declared=draft.declared,
                    derived=draft.derived,
                    columns=draft.columns,
                    reads=sorted(draft.reads),
                    pii=sorted(kinds),
                    note="; ".join(draft.notes) or None,
                )
            )
        return LineageGraph(nodes=nodes, edges=edges)


def _table_node(connection: str, table: str) -> LineageNode:
    key = table_key(table)
    return LineageNode(id=f"{connection}:{key}", kind="table", name=key, connection=connection)


def build_lineage(contracts: Iterable[ProductContract], *, dialects: Mapping[str, str] | None = None) -> LineageGraph:
    """The lineage graph of ``contracts`` (normally the latest version of every product).

    ``dialects`` names the sqlglot dialect of each connection's ``source.query`` text; a connection not
    named is parsed in sqlglot's default dialect, as contract validation parses it. Declared names of
    products not among ``contracts`` are left out.
    """
    contracts = list(contracts)
    builder = _Builder()
    by_table: dict[tuple[str, str], list[ProductContract]] = {}
    for contract in contracts:
        builder.node(LineageNode(id=contract.name, kind="product", name=contract.name))
        for column in contract.columns:
            builder.tag(contract.name, column.name, column.pii)
        if contract.source.table is not None:
            by_table.setdefault((contract.source.connection, table_key(contract.source.table)), []).append(contract)

    for (connection, table), sharing in by_table.items():
        table_id = builder.node(_table_node(connection, table))
        for contract in sharing:
            for column in contract.columns:
                builder.tag(table_id, column.name.lower(), column.pii)
            links = [ColumnLink(source=c.name.lower(), target=c.name) for c in contract.columns]
            builder.edge(table_id, contract.name, derived=True, links=links, note="source table")
            for other in sharing:
                if other is not contract:
                    shared = [
                        ColumnLink(source=c.name, target=c.name) for c in contract.columns if other.column(c.name)
                    ]
                    builder.edge(other.name, contract.name, derived=True, links=shared, note=f"same table {table_id}")

    for contract in contracts:
        if contract.source.query is not None:
            _link_query(builder, contract, by_table, dialects or {})

    names = {c.name for c in contracts}
    for contract in contracts:
        for upstream in contract.lineage.upstream:
            if upstream in names:
                builder.edge(upstream, contract.name, declared=True)
        for downstream in contract.lineage.downstream:
            if downstream in names:
                builder.edge(contract.name, downstream, declared=True)
    return builder.graph()


def _link_query(
    builder: _Builder,
    contract: ProductContract,
    by_table: Mapping[tuple[str, str], list[ProductContract]],
    dialects: Mapping[str, str],
) -> None:
    """Edges into a ``source.query`` product from the tables it reads and from those tables' products."""
    connection = contract.source.connection
    schema = {
        table: sorted({c.name.lower() for p in products for c in p.columns})
        for (conn, table), products in by_table.items()
        if conn == connection
    }
    assert contract.source.query is not None
    traced = derive_query_lineage(
        contract.source.query, contract.column_names, dialect=dialects.get(connection), schema=schema
    )
    note = "column level"
    if traced.error:
        note = f"table level only: {traced.error}"
    elif traced.unresolved:
        note = (
            f"table level only: columns {', '.join(traced.unresolved)} could not be traced "
            "(SELECT * over a table no product describes, an ambiguous column, or not in the query)"
        )
    for table in traced.tables:
        table_id = builder.node(_table_node(connection, table))
        links = None
        if traced.error is None and not traced.unresolved:
            links = [
                ColumnLink(source=column, target=output)
                for output, feeds in traced.columns.items()
                for feed_table, column in feeds
                if feed_table == table
            ]
        reads = traced.reads.get(table, [])
        builder.edge(table_id, contract.name, derived=True, links=links, note=note, reads=reads)
        for product in by_table.get((connection, table), []):
            own = {c.name.lower(): c.name for c in product.columns}
            product_links = None
            if links is not None:
                product_links = [ColumnLink(source=own[k.source], target=k.target) for k in links if k.source in own]
            product_reads = [own[c] for c in reads if c in own]
            builder.edge(product.name, contract.name, derived=True, links=product_links, note=note, reads=product_reads)
