"""The service layer: one coroutine per use case, shared by the MCP server and the CLI.

Each use case resolves the product from the registry, asks :mod:`catalog.policy` what the principal
may see, compiles one governed statement (:mod:`catalog.compile` / :mod:`catalog.sqlguard`), runs
it on the product's connector under the configured limits, and records exactly one audit row. If
the audit row cannot be written the call fails (fail closed): nothing unaudited is served.

What a principal is told names only products it may read: an unknown name suggests readable products
only, and lineage lists readable products only. A product that exists but is not readable answers
``access_denied`` with the policy's reason, so that the principal can ask its owner for access.

Retrieval use cases work the same way over the service's own connectors: ``search_documents`` and
``ask`` search only readable products and re-read every hit's row through the principal's governed
source; ``index_products`` (operators) reads sources ungoverned and never indexes masked fields. The
search store and the local models live in one :class:`~servers.retrieval_backend.RetrievalBackend`,
opened on first use and closed with the service.

Quality and freshness: every read use case calls :meth:`DataProductsService.read_trust` inside its
audited call for the products it touches (:mod:`servers.trust`): the result carries one freshness
block per product and warnings (stale with ``sla.on_stale: warn``, a failing ``error``-severity
check), and a stale product whose contract says ``on_stale: refuse`` is refused with ``stale_data``.
These use cases live in :mod:`servers.quality_cases`: ``run_checks`` (operators) runs the contracts'
checks as the operator over the ungoverned sources and records the results; ``get_quality`` shows
them to a reader. The semantic layer (``list_metrics``, ``query_metrics``) lives in
:mod:`servers.metrics_cases` and lineage (``get_lineage``) in :mod:`servers.lineage_cases`: mixins of
this class, so each family of use cases reads on its own over the shared plumbing here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import anyio
import anyio.to_thread

from catalog.audit import AuditLog
from catalog.compile import next_cursor
from catalog.compiler import Compiler
from catalog.contract import ProductContract
from catalog.errors import ConnectorError, EmbeddingError, InvalidRequestError, NotFoundError
from catalog.policy import GovernedView, can_read, govern
from catalog.principal import Principal
from catalog.quality_log import QualityLog
from catalog.query import Query, RowSet
from catalog.registry import Registry, unknown_product
from catalog.replica_log import ReplicaLog
from catalog.sqlguard import connection_of, parse_product_sql
from connectors import connector_for
from connectors.base import Connector
from embeddings.answer import Answer, Passage, build_messages, cited_numbers
from embeddings.index import IndexReport, ProgressCallback, index_product
from embeddings.retrieval import (
    CATALOG_PRODUCT,
    RetrievedChunk,
    catalog_search,
    fuse_rankings,
    group_by_row,
    hybrid_search,
    index_catalog,
)
from servers._aggregate_only import aggregate_only_warnings, sql_aggregate_only_warning, suppressed_groups
from servers._audit_trail import CallStats, audited_call
from servers._call_facts import note_store, note_view, note_views
from servers._resource_listing import PAGE_SIZE, product_page
from servers._statements import MetricsStatementCache, StatementCache
from servers._visible import searchable, visible_keys
from servers.lineage_cases import LineageUseCases
from servers.metrics_cases import MetricsUseCases
from servers.prometheus_metrics import counted_run
from servers.quality_cases import QualityUseCases
from servers.replica_cases import ReplicaUseCases, stamp
from servers.replica_router import ReplicaRouter
from servers.results import (
    DocumentsResult,
    ProductDescription,
    QueryResult,
    SearchResult,
    as_json,
    check_info,
    deprecation_warning,
    describe,
    document_hit,
    query_result,
)
from servers.retrieval_backend import RetrievalBackend
from servers.search_index import stamp_search
from servers.settings import Settings
from servers.trust import ReadTrust, TrustKeeper, utc_now

__all__ = ["DataProductsService"]


log = logging.getLogger(__name__)
#: The bytes one page of the index flow may read: documents are long.
INDEX_MAX_BYTES = 256_000_000
#: How many of the best chunks ``search_documents`` groups into rows (at least; 3 per hit asked for).
ROW_CANDIDATES = 100
#: How many hops get_lineage may walk.


class DataProductsService(QualityUseCases, MetricsUseCases, LineageUseCases, ReplicaUseCases):
    """Shared state (registry, audit log, connectors) and the use cases over it.

    Build with :meth:`open`; close with :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.registry = registry
        self.audit = audit
        self._salt = settings.require_salt()
        self._connectors: dict[str, Connector] = {}
        self._compilers: dict[str, Compiler] = {}
        self._connector_lock = anyio.Lock()
        self._contracts: dict[str, tuple[float, ProductContract]] = {}
        self._contract_ttl_s = settings.contract_cache_s
        self._clock = clock  # seconds, monotonic: when a cached contract is too old to use
        self._statements = StatementCache()
        self._metric_statements = MetricsStatementCache()
        self.retrieval = RetrievalBackend(settings)
        self.quality = QualityLog(registry)
        self.replicas = ReplicaRouter(ReplicaLog(registry))
        self.trust = TrustKeeper(
            self.quality, lambda contract: self.measure_as_of(contract), cache_s=settings.freshness.cache_s
        )

    @classmethod
    def open(cls, settings: Settings) -> DataProductsService:
        """Connect to the registry (creating its schema if needed).

        Raises:
            ConfigError: the settings are incomplete (e.g. no hash salt).
        """
        registry = Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace)
        return cls(settings, registry, AuditLog.from_registry(registry))

    async def aclose(self) -> None:
        for connector in self._connectors.values():
            await connector.aclose()
        self._connectors.clear()
        await self.replicas.aclose()
        await self.retrieval.aclose()
        await anyio.to_thread.run_sync(self.audit.close)  # drains the rows still being group-committed
        self.registry.close()

    async def __aenter__(self) -> DataProductsService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- use cases -------------------------------------------------------------------------------

    async def search_products(self, principal: Principal, text: str, *, limit: int = 10) -> SearchResult:
        """Products the principal may read, best match first: keyword hits fused with semantic hits over
        the indexed catalog (reciprocal rank fusion); keyword only when the catalog is not indexed."""

        async def run(stats: CallStats) -> SearchResult:
            found = await anyio.to_thread.run_sync(lambda: self.registry.search(text, limit=limit * 4))
            keyword = [c.name for c in found]
            semantic = await self._semantic_product_ranking(text, limit * 4)
            ranked = [name for name, _, _ in fuse_rankings({"keyword": keyword, "semantic": semantic})]
            contracts = {c.name: c for c in found}
            for name in ranked:
                if name not in contracts:
                    try:
                        contracts[name] = await self.contract(name)
                    except NotFoundError:  # indexed, since removed
                        continue
            readable = [contracts[n] for n in ranked if n in contracts and can_read(contracts[n], principal)]
            stats.rows = min(len(readable), limit)
            return SearchResult(products=[await self._trusted_summary(c) for c in readable[:limit]])

        return await audited_call(self.audit, principal, "search_products", {"text": text, "limit": limit}, run)

    async def search_documents(
        self, principal: Principal, text: str, *, product: str | None = None, k: int = 10, chunks: bool = False
    ) -> DocumentsResult:
        """Hybrid search over the indexed text of products the principal may read; hits cite their row.

        One hit per row by default (its best chunk, with how many of its chunks matched), so ``k`` counts
        rows; ``chunks`` returns the ``k`` best chunks instead, several of a row among them.

        Raises:
            InvalidRequestError: ``k`` is above ``limits.max_hits``.
            NotFoundError, AccessDeniedError (``product`` given), EmbeddingError, ConnectorError.
        """

        async def run(stats: CallStats) -> DocumentsResult:
            stats.product = product
            trust = ReadTrust()
            searched: list[ProductContract] = []
            hits = await self._governed_hits(
                principal, text, product=product, k=k, trust=trust, per_row=not chunks, searched_into=searched
            )
            stats.rows = len(hits)
            result = trust.apply(DocumentsResult(hits=[document_hit(h) for h in hits]))
            with self.retrieval.store_errors():  # the search index's state: which as_of answered
                return await stamp_search(result, await self.retrieval.store(), searched, utc_now())

        args = {"text": text, "product": product, "k": k, **({"chunks": True} if chunks else {})}
        return await audited_call(self.audit, principal, "search_documents", args, run)

    async def ask_context(
        self,
        principal: Principal,
        question: str,
        *,
        product: str | None = None,
        k: int = 6,
        trust: ReadTrust | None = None,
    ) -> list[Passage]:
        """The governed passages a local answer to ``question`` may use (audited as ``ask``).

        ``trust`` (when given) receives the freshness blocks and warnings of the products passages come from.

        Raises:
            StaleDataError: ``product`` is stale and refuses reads. NotFoundError, AccessDeniedError.
        """

        async def run(stats: CallStats) -> list[Passage]:
            stats.product = product
            hits = await self._governed_hits(principal, question, product=product, k=k, trust=trust)
            stats.rows = len(hits)
            return [Passage(h.product, h.key, h.field, h.chunk, h.text) for h in hits]

        return await audited_call(self.audit, principal, "ask", {"question": question, "product": product, "k": k}, run)

    async def ask(
        self,
        principal: Principal,
        question: str,
        *,
        product: str | None = None,
        k: int = 4,
        max_tokens: int = 200,
        context_only: bool = False,
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer ``question`` with the local chat model from governed passages, citing them as [n].

        Retrieval is the audited part (:meth:`ask_context`). No model runs when no passage matched or
        ``context_only`` is set (``text`` stays None). ``on_token`` receives the answer as it streams,
        from a worker thread.

        Raises:
            EmbeddingError: a model is missing or failed. NotFoundError, AccessDeniedError, ConnectorError.
        """
        trust = ReadTrust()
        passages = await self.ask_context(principal, question, product=product, k=k, trust=trust)
        answer = Answer(question, passages, build_messages(question, passages))
        answer.warnings, answer.freshness = trust.all_warnings, [as_json(f) for f in trust.freshness]
        if context_only or not passages:
            return answer
        model = await self.retrieval.chat_model()

        def generate() -> str:
            pieces = []
            for piece in model.stream(answer.messages, max_tokens=max_tokens):
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
            return "".join(pieces)

        answer.text = await anyio.to_thread.run_sync(generate)
        answer.cited = cited_numbers(answer.text, len(passages))
        return answer

    @counted_run("index")
    async def index_products(
        self, *, product: str | None = None, rebuild: bool = False, progress: ProgressCallback | None = None
    ) -> list[IndexReport]:
        """Index one or every product with a ``retrieval:`` section (incremental unless ``rebuild``), then
        the catalog for semantic ``search_products``. An operator's use case: not audited.

        Raises:
            EmbeddingError: the embedding model is missing (run `dataproducts models build`).
            NotFoundError, InvalidRequestError, ConnectorError.
        """
        current = await anyio.to_thread.run_sync(lambda: self.registry.list_contracts(include_deprecated=False))
        chosen = [await self.contract(product)] if product is not None else [c for c in current if c.retrieval]
        with self.retrieval.store_errors():  # a damaged store says how to repair it
            store, embedder = await self.retrieval.store(), await self.retrieval.embedder()
            reports = []
            for contract in chosen:
                connector = await self.connector(contract.source.connection)
                compiler = self.compiler(connector).bounded(max_bytes=INDEX_MAX_BYTES)
                self.trust.forget(contract.name)  # the index holds the source's state of now: measure it now
                as_of = (await self.trust.freshness(contract)).as_of  # None: the run's start is its as_of
                reports.append(
                    await index_product(
                        contract,
                        connector,
                        store,
                        embedder,
                        compiler=compiler,
                        rebuild=rebuild,
                        progress=progress,
                        as_of=as_of,
                    )
                )
            reports.append(await index_catalog(current, store, embedder))
        return reports

    async def _governed_hits(
        self,
        principal: Principal,
        text: str,
        *,
        product: str | None,
        k: int,
        trust: ReadTrust | None = None,
        per_row: bool = False,
        searched_into: list[ProductContract] | None = None,
    ) -> list[RetrievedChunk]:
        """The ``k`` best chunks (``per_row``: rows, by their best chunk) of readable products whose rows
        and fields the principal may see.

        Hybrid search runs only over products the principal may read (filtered in the store, so ``k``
        results survive); hits on a field masked for the principal are dropped (masked fields are not
        indexed anyway); the hits' keys are re-read through the product's governed source
        (:func:`servers._visible.visible_keys`), so a row outside the principal's filter never returns.

        Freshness: a named ``product`` that is stale and refuses reads raises ``StaleDataError``; across
        products, such products are left out with a warning. ``trust`` receives the blocks and warnings
        of the products hits come from; ``searched_into`` receives the contracts of the products searched.
        """
        most = self.settings.limits.max_hits
        if not 1 <= k <= most:
            raise InvalidRequestError(f"k must be between 1 and {most} (limits.max_hits), not {k}; ask for fewer hits")
        if product is not None:
            readable = [(await self._view(product, principal)).contract]  # AccessDeniedError with the reason
        else:
            readable = await self.readable_products(principal)
        searchable = readable if product is not None else [c for c in readable if c.retrieval is not None]
        searched = await self.trust.gate(searchable, withhold=product is None)  # StaleDataError: named product
        views = {
            c.name: govern(c, principal)
            for c in searchable
            if c.retrieval is not None and c.name not in searched.withheld
        }
        if searched_into is not None:
            searched_into.extend(v.contract for v in views.values())
        hits = await self._search_views(views, text, k, per_row=per_row)
        if trust is not None:
            by_name = {c.name: c for c in searchable}
            touched = [product] if product is not None else list(dict.fromkeys(h.product for h in hits))
            found = await self.trust.gate([by_name[name] for name in touched])  # cached: no new measurement
            trust.freshness.extend(found.freshness)
            trust.warnings.extend(found.warnings)
            trust.withheld.update(searched.withheld)
        return hits

    async def _search_views(
        self, views: dict[str, GovernedView], text: str, k: int, *, per_row: bool = False
    ) -> list[RetrievedChunk]:
        """The ``k`` best visible hits over the governed ``views`` (see :meth:`_governed_hits`)."""
        if not views:
            return []
        note_views(views.values())
        note_store(self.settings.search.kind)
        with self.retrieval.store_errors():  # a damaged store says how to repair it
            store, embedder = await self.retrieval.store(), await self.retrieval.embedder()
            # rows need more chunks than hits: a row's other chunks and unreadable rows fall away
            depth = max(k * 3, ROW_CANDIDATES) if per_row else k * 3
            hits = await hybrid_search(
                store, embedder, text, k=depth, products=sorted(views), candidates=max(depth, 100)
            )
            if not hits and (missing := await self.retrieval.not_indexed(sorted(views))):
                raise missing  # a lost or never built index, not "no match"
        kept = [h for h in hits if searchable(views[h.product], h.field)]
        if per_row:
            kept = group_by_row(kept)
        visible: dict[str, set[str]] = {}
        for name in {h.product for h in kept}:
            view = views[name]
            connector = await self.connector(view.contract.source.connection)
            note_store(connector.kind)
            keys = [h.key for h in kept if h.product == name]
            visible[name] = await visible_keys(view, connector, self.compiler(connector), keys)
        return [h for h in kept if h.key_token in visible[h.product]][:k]

    async def _semantic_product_ranking(self, text: str, k: int) -> list[str]:
        """Product names ranked by hybrid search over their indexed descriptions.

        Empty when the catalog is not indexed (``dataproducts index`` does it), or its model or the
        search store cannot be used (logged): ``search_products`` then ranks by keywords alone.
        """
        try:
            with self.retrieval.store_errors():
                store = await self.retrieval.store()
                if not await store.indexed(CATALOG_PRODUCT):
                    return []
                embedder = await self.retrieval.embedder()
                return [name for name, _ in await catalog_search(store, embedder, text, k)]
        except (EmbeddingError, ConnectorError) as exc:
            log.warning("semantic product search is off: %s", exc.message)
            return []

    async def describe_product(self, principal: Principal, name: str) -> ProductDescription:
        """The product's contract as this principal sees it.

        Raises:
            NotFoundError: unknown product. AccessDeniedError: the policy does not grant access.
        """

        async def run(stats: CallStats) -> ProductDescription:
            stats.product = name
            return await self._description(name, principal)

        return await audited_call(self.audit, principal, "describe_product", {"product": name}, run)

    async def query_product(self, principal: Principal, name: str, query: Query) -> QueryResult:
        """Run a governed, bounded read of one product.

        Raises:
            NotFoundError, AccessDeniedError, InvalidRequestError, ConnectorError.
        """

        async def run(stats: CallStats) -> QueryResult:
            stats.product = name
            view = await self._view(name, principal)
            trust = await self.read_trust([view.contract])  # StaleDataError: refused, and audited
            route = await self.replicas.route(view, aggregate=query.is_aggregate)  # aggregates: a fresh replica
            store_view = route.view or view
            connector = route.connector or await self.connector(view.contract.source.connection)
            note_store(connector.kind)
            compiled, prepared = self._statements.compiled(
                store_view, query, compiler=self.compiler(connector), connector=connector
            )
            small = await suppressed_groups(compiled, connector)

            def finish(rowset: RowSet) -> QueryResult:  # in the statement's worker thread
                result = query_result(rowset, [view])
                result.next_cursor = next_cursor(compiled, rowset)
                aggregate_only_warnings(store_view, query, compiled, result, small)
                deprecation_warning(view, result)
                trust.apply(stamp(route, result))
                stats.rows, stats.bytes, stats.objects = result.row_count, rowset.bytes, rowset.objects
                return result

            # the audit row commits in the same thread, right after the result is built
            return await connector.execute_then(prepared, stats.committing(finish))

        args = {"product": name, **query.model_dump(exclude_defaults=True, by_alias=True)}
        return await audited_call(self.audit, principal, "query_product", args, run)

    async def run_sql(self, principal: Principal, sql: str) -> QueryResult:
        """Run one read-only SELECT over product names, governed like ``query_product``.

        Raises:
            SQLRefusedError: the text is not one SELECT over readable products.
            NotFoundError, AccessDeniedError, ConnectorError.
        """

        async def run(stats: CallStats) -> QueryResult:
            # parsing and rewriting run in a worker thread: a large statement never holds up the event loop
            parsed = await anyio.to_thread.run_sync(lambda: parse_product_sql(sql, limits=self.settings.limits))
            stats.product = ",".join(parsed.products)
            views = {name: await self._view(name, principal) for name in parsed.products}
            trust = await self.read_trust([v.contract for v in views.values()])  # StaleDataError: refused, audited
            route = await self.replicas.route_sql(parsed, views)  # aggregates, joins across stores: fresh replicas
            store_views = route.views or ({route.view.name: route.view} if route.view is not None else views)
            connector = route.connector or await self.connector(connection_of(views))
            note_store(connector.kind)
            compiler = self.compiler(connector)
            prepared = await anyio.to_thread.run_sync(lambda: connector.prepare(compiler.rewrite(parsed, store_views)))

            def finish(rowset: RowSet) -> QueryResult:  # in the statement's worker thread
                result = query_result(rowset, list(views.values()))
                sql_aggregate_only_warning(views.values(), result)
                for view in views.values():
                    deprecation_warning(view, result)
                trust.apply(stamp(route, result))
                stats.rows, stats.bytes, stats.objects = result.row_count, rowset.bytes, rowset.objects
                return result

            # the audit row commits in the same thread, right after the result is built
            return await connector.execute_then(prepared, stats.committing(finish))

        return await audited_call(self.audit, principal, "run_sql", {"sql": sql}, run)

    async def product_document(self, principal: Principal, name: str) -> str:
        """The ``product://{name}`` resource: the described product as JSON."""

        async def run(stats: CallStats) -> str:
            stats.product = name
            return (await self._description(name, principal)).model_dump_json(indent=2)

        return await audited_call(self.audit, principal, "read_resource", {"uri": f"product://{name}"}, run)

    async def list_product_resources(
        self, principal: Principal, cursor: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> tuple[list[ProductContract], str | None]:
        """One page of the products the principal may read, for ``resources/list`` (audited as ``list_resources``).

        Raises:
            InvalidRequestError: ``cursor`` is not one this server gave.
        """

        async def run(stats: CallStats) -> tuple[list[ProductContract], str | None]:
            page, after = product_page(await self.readable_products(principal), cursor, page_size=page_size)
            stats.rows = len(page)
            return page, after

        return await audited_call(self.audit, principal, "list_resources", {"cursor": cursor}, run)

    async def readable_products(self, principal: Principal) -> list[ProductContract]:
        """Every registered product the principal may read (for listings and suggestions)."""
        contracts = await anyio.to_thread.run_sync(self.registry.list_contracts)
        return [c for c in contracts if can_read(c, principal)]

    # -- shared plumbing ---------------------------------------------------------------------------

    async def contract(self, name: str) -> ProductContract:
        """The latest registered contract, cached for ``settings.contract_cache_s`` seconds (operator use: no policy).

        A version registered by another process (a tightened policy) applies to every call made once the
        TTL has passed since the cached copy was read, never later.

        Raises:
            NotFoundError: no such product; the message lists close names among *all* products, so
                use cases answering a principal go through :meth:`_view` instead.
        """
        now = self._clock()  # taken before the read: the copy is never older than its timestamp says
        cached = self._contracts.get(name)
        if cached and now - cached[0] < self._contract_ttl_s:
            return cached[1]
        contract = await anyio.to_thread.run_sync(self.registry.get, name)
        self._contracts[name] = (now, contract)
        return contract

    async def _view(self, name: str, principal: Principal) -> GovernedView:
        """``name`` as ``principal`` may see it.

        Raises:
            NotFoundError: no such product; the message suggests only products the principal may read.
            AccessDeniedError: the product exists and the policy does not grant the principal access.
        """
        try:
            contract = await self.contract(name)
        except NotFoundError:
            readable = [c.name for c in await self.readable_products(principal)]
            raise unknown_product(
                name,
                readable,
                listing="products you may read",
                empty="you may read no products; ask a product's owner for access",
            ) from None
        view = govern(contract, principal)
        note_view(view)
        return view

    async def _description(self, name: str, principal: Principal) -> ProductDescription:
        """The described product; its lineage names only products the principal may read."""
        view = await self._view(name, principal)
        trust = await self.read_trust([view.contract])  # StaleDataError: refused, and audited
        description = describe(view)
        description.upstream = await self._readable_names(description.upstream, principal)
        description.quality = [as_json(check_info(r)) for r in await self.trust.latest_checks(view.contract)]
        return trust.apply(description)

    async def _readable_names(self, names: Iterable[str], principal: Principal) -> list[str]:
        readable = []
        for name in names:
            try:
                contract = await self.contract(name)
            except NotFoundError:
                continue
            if can_read(contract, principal):
                readable.append(name)
        return readable

    async def connector(self, name: str) -> Connector:
        """The open connector of a configured connection (opened once, shared)."""
        async with self._connector_lock:
            if name not in self._connectors:
                self._connectors[name] = connector_for(self.settings.connection(name))
            return self._connectors[name]

    def compiler(self, connector: Connector) -> Compiler:
        """The compiler of ``connector``'s statements: its dialect, the mask salt, the call limits."""
        compiler = self._compilers.get(connector.name)
        if compiler is None:
            compiler = Compiler(connector.dialect, self._salt, self.settings.limits)
            self._compilers[connector.name] = compiler
        return compiler
