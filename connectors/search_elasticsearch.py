"""The Elasticsearch search store: one index per product, BM25 by ``match``, vectors by approximate kNN.

Why one index per product rather than one shared index with a ``product`` field: a ``dense_vector``
field has one ``dims`` per index, and each product records its own embedding model, so products
indexed with different models (or a re-index onto a new model) cannot share an index; dropping a
product is deleting its index; and the index's mapping ``_meta`` is where the product's
``model_id``/``dimensions`` live, with no separate bookkeeping document; each run adds the index's
state there too (``as_of``: the source state it read, ``indexed_at``: when), after its documents are
in. Each document still carries a ``product`` keyword and every query filters on it. Indexes are
``<index_prefix>-chunks-<product>``
(lower-cased, other characters escaped, plus a short hash when escaping changed the name).

Mapping: ``text`` (``text``, english analyzer: BM25), ``vector`` (``dense_vector``, cosine,
``index: true`` with plain float ``hnsw``: Elasticsearch 9 would otherwise quantise, int8 below 384
dimensions and BBQ from 384 on, and scores would drift from the embedded store's exact cosine),
``id``/``product``/``field``/``field_hash`` keywords, ``key`` stored only.
BM25 is a ``match`` query (analysed text: no query syntax, so user text cannot inject operators);
kNN is the ``knn`` search option with a ``product`` filter. Fusion of the two happens above the
store (reciprocal rank fusion in our code), so everything here runs on the free/basic licence; the
paid ``rrf`` retriever is never used. kNN scores are turned back into cosine similarity.

``apply`` bulk-upserts then bulk-deletes and refreshes: Elasticsearch has no multi-document
transaction, so a failed run leaves every document either at its previous or at its new version
(never half-written), and old chunks are deleted only after the new ones are in.

The ``elasticsearch`` package is optional (``pip install 'dataproducts[elasticsearch]'``); it is
imported on first use, over httpx (no aiohttp needed).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from catalog.errors import (
    ConfigError,
    ConnectorError,
    ConnectorUnavailableError,
    InvalidRequestError,
    QueryExecutionError,
    QueryTimeoutError,
)
from connectors._search import checked_vectors, model_mismatch
from connectors.search_base import Chunk, ChunkHit, IndexedChunk, IndexState, SearchStore

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch

__all__ = ["ElasticsearchSearchStore", "index_name"]

MAX_NUM_CANDIDATES = 10_000
BULK_CHUNK = 500
_UNSAFE = re.compile(r"[^a-z0-9._-]")
_HIT_SOURCE = ["product", "key", "field", "chunk", "text"]


def index_name(prefix: str, product: str) -> str:
    """The index of ``product``: a valid, collision-free Elasticsearch index name."""
    safe = _UNSAFE.sub("_", product.lower())
    if safe != product or len(safe) > 180:
        safe = f"{safe[:180]}-{hashlib.sha256(product.encode('utf-8')).hexdigest()[:10]}"
    return f"{prefix}-chunks-{safe}"


def _doc_id(chunk_id: str) -> str:
    """Chunk ids can exceed the 512-byte ``_id`` limit; their sha256 cannot."""
    return hashlib.sha256(chunk_id.encode("utf-8")).hexdigest()


def _client_module() -> Any:
    try:
        import elasticsearch
        import elasticsearch.helpers
    except ImportError as exc:
        raise ConfigError(
            "the Elasticsearch search store needs the elasticsearch client: install dataproducts[elasticsearch]"
        ) from exc
    return elasticsearch


class ElasticsearchSearchStore(SearchStore):
    """Search store on an Elasticsearch 8/9 cluster at ``url`` (credentials as API key or user + password)."""

    kind = "elasticsearch"

    def __init__(
        self,
        url: SecretStr | str,
        *,
        index_prefix: str = "dataproducts",
        api_key: SecretStr | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        """Nothing is contacted until first use.

        Raises:
            ConfigError: the client is not installed, or the index prefix is not a valid index name.
        """
        self._module = _client_module()
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", index_prefix):
            raise ConfigError(f"index_prefix {index_prefix!r} must be lower-case letters, digits, '.', '_' or '-'")
        self.index_prefix = index_prefix
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self._options: dict[str, Any] = {
            "verify_certs": verify_certs,
            "request_timeout": request_timeout,
            "node_class": "httpxasync",
        }
        if ca_certs:
            self._options["ca_certs"] = ca_certs
        if api_key is not None:
            self._options["api_key"] = api_key.get_secret_value()
        elif username is not None:
            self._options["basic_auth"] = (username, password.get_secret_value() if password else "")
        self._client: AsyncElasticsearch | None = None

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            self._client = self._module.AsyncElasticsearch(self._url.get_secret_value(), **self._options)
        return self._client

    # -- the one place client errors are mapped ----------------------------------------------------

    @asynccontextmanager
    async def _errors(self, action: str) -> AsyncIterator[None]:
        """Map client and transport errors to connector errors.

        Raises:
            ConnectorUnavailableError: the cluster cannot be reached or refuses the credentials.
            QueryTimeoutError: the request timed out.
            QueryExecutionError: the cluster rejected the request (or some documents of a bulk run).
        """
        es = self._module
        try:
            yield
        except ConnectorError:
            raise
        except es.ConnectionTimeout as exc:
            raise QueryTimeoutError(f"Elasticsearch timed out while {action}", orig=exc) from exc
        except es.ConnectionError as exc:
            raise ConnectorUnavailableError(f"cannot reach Elasticsearch while {action}: {exc}", orig=exc) from exc
        except (es.AuthenticationException, es.AuthorizationException) as exc:
            raise ConnectorUnavailableError(
                f"Elasticsearch refused the credentials while {action}: {exc.message}", orig=exc
            ) from exc
        except es.ApiError as exc:
            raise QueryExecutionError(f"Elasticsearch failed {action}: {exc}", orig=exc) from exc
        except es.helpers.BulkIndexError as exc:
            raise QueryExecutionError(f"Elasticsearch failed {action}: {exc.errors[:3]}", orig=exc) from exc
        except es.TransportError as exc:
            raise ConnectorUnavailableError(f"Elasticsearch transport failed while {action}: {exc}", orig=exc) from exc

    # -- writes ----------------------------------------------------------------------------------

    async def _model_of(self, index: str) -> tuple[str, int] | None:
        """``(model_id, dimensions)`` recorded in the index's mapping, None when there is no index."""
        response = await self.client.indices.get_mapping(index=index, ignore_unavailable=True, allow_no_indices=True)
        mapping: dict[str, Any] = next(iter(response.body.values()), {})
        meta = mapping.get("mappings", {}).get("_meta")
        return (meta["model_id"], int(meta["dimensions"])) if meta else None

    async def _create_index(self, index: str, model_id: str, dimensions: int) -> None:
        keyword = {"type": "keyword"}
        mappings = {
            "dynamic": "strict",
            "_meta": {"model_id": model_id, "dimensions": dimensions},
            "properties": {
                "id": keyword,
                "product": keyword,
                "field": keyword,
                "field_hash": keyword,
                "chunk": {"type": "integer"},
                "key": {"type": "object", "enabled": False},
                "text": {"type": "text", "analyzer": "english"},
                "vector": {
                    "type": "dense_vector",
                    "dims": dimensions,
                    "index": True,
                    "similarity": "cosine",
                    "index_options": {"type": "hnsw"},
                },
            },
        }
        try:
            await self.client.indices.create(index=index, mappings=mappings, settings={"number_of_shards": 1})
        except self._module.BadRequestError as exc:
            if exc.message != "resource_already_exists_exception":  # another replica created it first
                raise

    async def apply(
        self,
        product: str,
        upserts: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        deletes: Sequence[str],
        *,
        model_id: str,
        as_of: datetime | None = None,
    ) -> None:
        """Bulk upserts, then (when all of them are in) bulk deletes, with refreshes; each document is whole.

        Raises:
            InvalidRequestError: chunks of another product, vectors not one row per upsert, or a
                ``model_id``/dimensions other than the product was indexed with (re-index needed).
            ConnectorError: the cluster failed; documents already written are complete.
        """
        matrix = checked_vectors(product, upserts, vectors)
        index = index_name(self.index_prefix, product)
        upsert_actions: list[dict[str, Any]] = [
            {
                "_op_type": "index",
                "_index": index,
                "_id": _doc_id(c.id),
                "_source": {
                    "id": c.id,
                    "product": product,
                    "key": c.key,
                    "field": c.field,
                    "chunk": c.chunk,
                    "text": c.text,
                    "field_hash": c.content_hash,
                    "vector": matrix[i].tolist(),
                },
            }
            for i, c in enumerate(upserts)
        ]
        delete_actions = [{"_op_type": "delete", "_index": index, "_id": _doc_id(d)} for d in deletes]
        dimensions = int(matrix.shape[1])
        async with self._errors(f"indexing {product!r}"):
            known = await self._model_of(index)
            if known is not None and (known[0] != model_id or (upserts and known[1] != dimensions)):
                raise model_mismatch(product, known, model_id, dimensions)
            if known is None:
                if not upserts:
                    return
                await self._create_index(index, model_id, dimensions)
            await self._bulk(product, index, upsert_actions)
            await self._bulk(product, index, delete_actions)  # only once every new chunk is in
            if as_of is not None:  # _meta is replaced whole: keep the model fields
                model, dims = known or (model_id, dimensions)
                meta = {
                    "model_id": model,
                    "dimensions": dims,
                    "as_of": as_of.astimezone(UTC).isoformat(),
                    "indexed_at": datetime.now(UTC).isoformat(),
                }
                await self.client.indices.put_mapping(index=index, meta=meta)

    async def _bulk(self, product: str, index: str, actions: list[dict[str, Any]]) -> None:
        """Send ``actions`` and refresh the index; raise when any document was rejected (a missing one to
        delete is no failure)."""
        if not actions:
            return
        _, errors = await self._module.helpers.async_bulk(
            self.client, actions, chunk_size=BULK_CHUNK, raise_on_error=False, stats_only=False, ignore_status=404
        )
        await self.client.indices.refresh(index=index)
        failed = [e for e in errors if not ("delete" in e and e["delete"].get("status") == 404)]
        if failed:
            raise QueryExecutionError(
                f"Elasticsearch rejected {len(failed)} of {len(actions)} writes of {product!r}: {failed[:3]}"
            )

    async def drop(self, product: str) -> None:
        """Raises:
        ConnectorError: the cluster failed.
        """
        async with self._errors(f"dropping {product!r}"):
            await self.client.indices.delete(
                index=index_name(self.index_prefix, product), ignore_unavailable=True, allow_no_indices=True
            )

    # -- reads -----------------------------------------------------------------------------------

    async def indexed(self, product: str) -> list[IndexedChunk]:
        """Raises:
        ConnectorError: the cluster failed.
        """
        query = {"query": {"term": {"product": product}}, "_source": ["id", "field_hash"]}
        async with self._errors(f"listing the chunks of {product!r}"):
            found = [
                IndexedChunk(id=doc["_source"]["id"], field_hash=doc["_source"]["field_hash"])
                async for doc in self._module.helpers.async_scan(
                    self.client,
                    query=query,
                    index=index_name(self.index_prefix, product),
                    ignore_unavailable=True,
                    allow_no_indices=True,
                )
            ]
        return sorted(found, key=lambda c: c.id)

    async def index_states(self, products: Sequence[str]) -> dict[str, IndexState]:
        """Raises:
        ConnectorError: the cluster failed.
        """
        if not products:
            return {}
        states = {}
        async with self._errors("reading index states"):
            mappings = await self.client.indices.get_mapping(
                index=self._indices(products), ignore_unavailable=True, allow_no_indices=True
            )
            by_index = {index_name(self.index_prefix, p): p for p in products}
            for index, mapping in mappings.body.items():
                meta = mapping["mappings"].get("_meta", {})
                count = await self.client.count(index=index)
                product = by_index[index]
                states[product] = IndexState(
                    product=product,
                    as_of=meta.get("as_of"),
                    indexed_at=meta.get("indexed_at"),
                    chunks=int(count.body["count"]),
                )
        return states

    def _indices(self, products: Sequence[str] | None) -> str:
        if products is None:
            return f"{self.index_prefix}-chunks-*"
        return ",".join(index_name(self.index_prefix, p) for p in products)

    async def bm25(self, query: str, *, k: int, products: Sequence[str] | None = None) -> list[ChunkHit]:
        """Any text is a valid query (analysed, terms OR-ed); a text without terms finds nothing.

        Raises:
            ConnectorError: the cluster failed.
        """
        if not query.strip() or k <= 0 or (products is not None and not products):
            return []
        match: dict[str, Any] = {"match": {"text": {"query": query}}}
        body = {"bool": {"must": [match], "filter": _product_filter(products)}}
        async with self._errors("searching (BM25)"):
            response = await self.client.search(
                index=self._indices(products),
                query=body,
                size=k,
                source_includes=_HIT_SOURCE,
                ignore_unavailable=True,
                allow_no_indices=True,
                sort=["_score", {"id": "asc"}],
                track_scores=True,
            )
        return _hits(response.body, lambda s: s)

    async def knn(
        self, vector: npt.NDArray[np.float32], *, k: int, products: Sequence[str] | None = None
    ) -> list[ChunkHit]:
        """Approximate (HNSW) cosine search over the products indexed with ``len(vector)`` dimensions.

        Raises:
            InvalidRequestError: a product named in ``products`` was indexed with other dimensions.
            ConnectorError: the cluster failed.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if k <= 0 or (products is not None and not products) or not float(np.linalg.norm(query)):
            return []
        async with self._errors("searching (kNN)"):
            mappings = await self.client.indices.get_mapping(
                index=self._indices(products), ignore_unavailable=True, allow_no_indices=True
            )
            indices = []
            for index, mapping in sorted(mappings.body.items()):
                dimensions = int(mapping["mappings"]["_meta"]["dimensions"])
                if dimensions == len(query):
                    indices.append(index)
                elif products is not None:
                    raise InvalidRequestError(
                        f"index {index!r} holds {dimensions}-dimensional vectors, the query vector has "
                        f"{len(query)}; embed the query with the product's model"
                    )
            if not indices:
                return []
            knn = {
                "field": "vector",
                "query_vector": query.tolist(),
                "k": k,
                "num_candidates": min(max(2 * k, 100), MAX_NUM_CANDIDATES),
            }
            if products is not None:
                knn["filter"] = _product_filter(products)
            response = await self.client.search(index=",".join(indices), knn=knn, size=k, source_includes=_HIT_SOURCE)
        return _hits(response.body, lambda s: 2.0 * s - 1.0)  # cosine similarity from ES's (1 + cos) / 2

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _product_filter(products: Sequence[str] | None) -> list[dict[str, Any]]:
    return [] if products is None else [{"terms": {"product": list(products)}}]


def _hits(body: dict[str, Any], score: Any) -> list[ChunkHit]:
    return [
        ChunkHit(**{k: hit["_source"][k] for k in _HIT_SOURCE}, score=score(hit["_score"]), rank=rank)
        for rank, hit in enumerate(body["hits"]["hits"], start=1)
    ]
