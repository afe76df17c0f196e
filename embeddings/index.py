"""The index flow: make a search store hold the chunks of a product's text fields, incrementally.

:func:`index_product` reads every row's primary key and ``retrieval.text_fields`` through the
product's connector, in keyset pages over the product's *ungoverned* source (no row filters, no
masks): rows are governed at search time, when the service layer re-reads each hit's row through the
principal's governed view. Each row field is hashed (text + chunk settings) and compared with what
the store holds (:meth:`SearchStore.indexed`): only new and changed fields are chunked and embedded,
rows gone from the source lose their chunks, and the whole run is written by ONE
:meth:`SearchStore.apply` at the end, so a failed or interrupted run leaves the previous index as it
was. See :mod:`embeddings._sync` for the diff rules.

Masked fields are **skipped, never indexed as raw text**. A text field named by any rule of
``policy.masking`` (whoever is exempt) is left out and reported in ``IndexReport.skipped_fields``,
and chunks it left from earlier runs are deleted. Why skip rather than store: a search index shows
and ranks raw text — a BM25 or vector match on an e-mail address reveals it even if the hit's text
is hidden afterwards — and the masked value (a hash, ``***``) is useless to search. Why skip rather
than refuse the product: its other text fields are still worth searching, and the report says what
was left out. A product whose text fields are all masked indexes nothing. Fields named by any rule
of ``policy.aggregate_only`` are skipped the same way: their raw values never leave the store.

Context: a chunk cut from the middle of a long field loses what it is about. The text of
``retrieval.context_fields`` (default: a text field named ``title``, when there are others) heads every
chunk of the other text fields and is not indexed as a chunk of its own, so short titles never crowd
the text out of the results (``ask --k 2`` answered with two bare titles). A row whose other text
fields are empty keeps its title as its one chunk. The context is part of each field's hash: an
index built before re-embeds those rows once, and loses their title chunks.

Document products work the same way: a DuckDB view over ``docs/*.md`` (``read_text``: one row per
file with ``filename``, ``content``, ``size``, ``last_modified``) with ``primary_key: [filename]``
and ``retrieval: {text_fields: [content]}``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from catalog.compile import next_cursor
from catalog.compiler import Compiler
from catalog.contract import Chunking, ProductContract
from catalog.errors import InvalidRequestError, QueryExecutionError
from catalog.policy import GovernedView
from catalog.principal import Principal
from catalog.query import Aggregate, Query
from catalog.values import json_value
from connectors.base import Connector
from connectors.search_base import SearchStore
from embeddings._sync import IndexProgress, IndexReport, IndexRun, ProgressCallback
from embeddings.base import Embedder

__all__ = [
    "IndexProgress",
    "IndexReport",
    "ProgressCallback",
    "context_fields",
    "index_product",
    "indexable_fields",
]

log = logging.getLogger(__name__)

#: The principal the index flow reads as; it is never checked against ``policy.access`` (see the module docstring).
INDEXER = Principal(name="dataproducts-indexer", roles=frozenset({"indexer"}))
MASKED_REASON = "masked by policy.masking: raw text of a masked field is never indexed"
AGGREGATE_ONLY_REASON = "aggregate-only by policy.aggregate_only: its raw text is never indexed"


def indexable_fields(contract: ProductContract) -> tuple[list[str], dict[str, str]]:
    """The text fields the index flow reads, and the skipped ones with the reason.

    Raises:
        InvalidRequestError: the product has no ``retrieval`` section or no primary key, or its chunk
            overlap is not below the chunk size.
    """
    retrieval = contract.retrieval
    if retrieval is None:
        raise InvalidRequestError(
            f"{contract.name} has no retrieval section; add e.g. retrieval: {{text_fields: [notes]}} to its contract"
        )
    if not contract.primary_key:
        raise InvalidRequestError(f"{contract.name} needs a primary_key to be indexed: search hits cite rows by key")
    if retrieval.chunk.overlap >= retrieval.chunk.size:
        raise InvalidRequestError(
            f"{contract.name}: retrieval.chunk.overlap ({retrieval.chunk.overlap}) must be below "
            f"retrieval.chunk.size ({retrieval.chunk.size})"
        )
    masked = {column for rule in contract.policy.masking for column in rule.columns}
    aggregate_only = {column for rule in contract.policy.aggregate_only for column in rule.columns}
    fields = [f for f in dict.fromkeys(retrieval.text_fields) if f not in masked and f not in aggregate_only]
    skipped = {f: AGGREGATE_ONLY_REASON for f in retrieval.text_fields if f in aggregate_only}
    skipped |= {f: MASKED_REASON for f in retrieval.text_fields if f in masked}
    return fields, skipped


def context_fields(contract: ProductContract) -> list[str]:
    """The fields whose text heads every chunk of the product's other text fields (``retrieval.context``),
    less those masked or aggregate-only for anyone: their raw text is never indexed, as context neither."""
    if contract.retrieval is None:
        return []
    hidden = {c for rule in contract.policy.masking for c in rule.columns}
    hidden |= {c for rule in contract.policy.aggregate_only for c in rule.columns}
    return [f for f in contract.retrieval.context() if f not in hidden]


async def index_product(
    contract: ProductContract,
    connector: Connector,
    store: SearchStore,
    embedder: Embedder,
    *,
    compiler: Compiler,
    page_size: int = 2000,
    rebuild: bool = False,
    progress: ProgressCallback | None = None,
    as_of: datetime | None = None,
) -> IndexReport:
    """Bring the store's chunks of ``contract`` up to date with its source; one store write at the end.

    ``as_of`` is the source state the run brings the index in step with, recorded in the store with the
    run (the product's freshness ``as_of`` when it has one); default: the moment the run starts reading.

    ``compiler`` builds the reads for ``connector``; its limits bound each page (``max_rows`` is set
    to ``page_size``). ``rebuild`` re-embeds every row (after a model change).

    Raises:
        InvalidRequestError: no ``retrieval`` section, no primary key, unusable chunk settings, a
            primary key that cannot page by keyset, or a store indexed with another model.
        QueryExecutionError: one row is larger than ``limits.max_bytes``.
        ConnectorError: the source or the store failed (the previous index stays as it was).
        EmbeddingError: the model failed (nothing was written).
    """
    started = time.perf_counter()
    as_of = as_of or datetime.now(UTC)
    fields, skipped = indexable_fields(contract)
    heads = context_fields(contract)
    body_fields = [f for f in fields if f not in heads]
    for name, reason in skipped.items():
        log.warning("%s: text field %r not indexed: %s", contract.name, name, reason)
    view = GovernedView(contract=contract, principal=INDEXER)
    pages = compiler.bounded(max_rows=page_size)
    rows_total = await _count_rows(view, connector, pages)
    run = IndexRun(
        contract.name,
        store,
        embedder,
        chunking=contract.retrieval.chunk if contract.retrieval else Chunking(),
        stored=await store.indexed(contract.name),
        rebuild=rebuild,
        rows_total=rows_total,
        progress=progress,
        as_of=as_of,
    )
    run.report.skipped_fields = skipped
    key_columns = list(contract.primary_key)
    columns = list(dict.fromkeys([*key_columns, *fields, *heads]))
    cursor: str | None = None
    while True:
        query = Query(columns=columns, limit=page_size, cursor=cursor)
        compiled = pages.compile(view, query)
        if compiled.pagination != "keyset":
            raise InvalidRequestError(
                f"{contract.name}: its primary key {key_columns} cannot page by keyset (json or bytes column); "
                "give the product an orderable primary key to index it"
            )
        rowset = await connector.execute(compiled.statement, compiled.limits)  # ungoverned: see above
        if not rowset.rows and rowset.truncated:
            raise QueryExecutionError(
                f"{contract.name}: one row is larger than the read limit of {pages.limits.max_bytes} bytes; "
                "raise limits.max_bytes for indexing"
            )
        positions = {c: rowset.columns.index(c) for c in columns}
        for row in rowset.rows[: compiled.row_limit]:
            key = {c: json_value(row[positions[c]]) for c in key_columns}
            texts = {f: _text(row[positions[f]]) for f in fields}
            texts, context = _with_context(texts, {f: _text(row[positions[f]]) for f in heads}, body_fields)
            run.add(key, texts, context=context)
        run.emit("reading")
        await run.flush()
        cursor = next_cursor(compiled, rowset)
        if cursor is None:
            break
    report = await run.finish()
    report.seconds = time.perf_counter() - started
    return report


def _with_context(
    texts: dict[str, str | None], heads: dict[str, str | None], body_fields: list[str]
) -> tuple[dict[str, str | None], str | None]:
    """The texts to chunk and the context heading each chunk: the context fields' text heads the body
    fields' chunks, and is indexed on its own only when the row has no body text (it is all there is)."""
    context = "\n".join(" ".join(t.split()) for t in heads.values() if t and t.strip()) or None
    if not heads or not body_fields:
        return texts, None
    if any(texts.get(f) and str(texts[f]).strip() for f in body_fields):
        return {f: texts.get(f) for f in body_fields}, context
    return texts, None  # a row with a title and no text: its title is what can be found


async def _count_rows(view: GovernedView, connector: Connector, compiler: Compiler) -> int:
    compiled = compiler.compile(view, Query(aggregates=[Aggregate(fn="count")]))
    rowset = await connector.execute(compiled.statement, compiled.limits)
    return int(rowset.rows[0][0]) if rowset.rows else 0


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
