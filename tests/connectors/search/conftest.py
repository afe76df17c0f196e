"""The search contract suite's stores: the embedded SQLite file and a real Elasticsearch cluster.

Elasticsearch comes from ``--es-url URL`` or ``DATAPRODUCTS_ES_URL`` (``http://user:pass@host:9200``
works), else from a throwaway container when ``testcontainers`` is installed and a Docker engine
answers (image: ``DATAPRODUCTS_ES_IMAGE``); otherwise its tests are skipped and say why. Each test
gets its own index prefix and removes its indices and pipelines afterwards. Elasticsearch is never
faked.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.search_base import SearchStore
from connectors.search_elasticsearch import ElasticsearchSearchStore, index_name
from connectors.search_embedded import EmbeddedSearchStore

NO_ES = "no Elasticsearch: set DATAPRODUCTS_ES_URL or --es-url, or run with a Docker engine"
ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:9.0.0"
POISON = "POISON"


@dataclass
class SearchStoreCase:
    """A store under test with what the suite may expect of it."""

    id: str
    store: SearchStore
    # A second store on the same storage: what a server process sees while an indexer writes.
    open_another: Callable[[], SearchStore]
    # Make the store itself fail (mid-run) on writing a chunk whose text is POISON.
    inject_failure: Callable[[str], Awaitable[None]]
    # One index run is all or nothing (else: each document is written whole or not at all).
    atomic: bool


def _embedded(tmp_path: Path) -> SearchStoreCase:
    path = tmp_path / "search.sqlite"

    async def inject_failure(product: str) -> None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(
                f"CREATE TRIGGER poison BEFORE INSERT ON chunks WHEN new.text = '{POISON}'"
                " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
            conn.commit()

    return SearchStoreCase(
        "embedded", EmbeddedSearchStore(path), lambda: EmbeddedSearchStore(path), inject_failure, True
    )


@pytest.fixture(scope="session")
def es_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """URL of a real Elasticsearch cluster, or None when there is none to be had."""
    url = request.config.getoption("es_url", default=None) or os.environ.get("DATAPRODUCTS_ES_URL")
    if url:
        yield url
        return
    with _container() as started:
        yield started


@contextlib.contextmanager
def _container() -> Iterator[str | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import docker
            from testcontainers.community.elasticsearch import ElasticSearchContainer

            docker.from_env().ping()
    except Exception:  # no testcontainers, no docker client or no engine answering
        yield None
        return
    image = os.environ.get("DATAPRODUCTS_ES_IMAGE", ES_IMAGE)
    with ElasticSearchContainer(image, mem_limit="2G").with_env("ES_JAVA_OPTS", "-Xms1g -Xmx1g") as es:
        yield f"http://{es.get_container_host_ip()}:{es.get_exposed_port(es.port)}"


def _elasticsearch(url: str) -> SearchStoreCase:
    prefix = f"dptest-{uuid.uuid4().hex[:12]}"
    store = ElasticsearchSearchStore(url, index_prefix=prefix)

    async def inject_failure(product: str) -> None:
        await store.client.ingest.put_pipeline(
            id=f"{prefix}-poison",
            processors=[{"fail": {"if": f"ctx.text == '{POISON}'", "message": "injected failure"}}],
        )
        await store.client.indices.put_settings(
            index=index_name(prefix, product), settings={"index.default_pipeline": f"{prefix}-poison"}
        )

    def open_another() -> SearchStore:
        return ElasticsearchSearchStore(url, index_prefix=prefix)

    return SearchStoreCase("elasticsearch", store, open_another, inject_failure, False)


async def _remove_es_indices(case: SearchStoreCase) -> None:
    assert isinstance(case.store, ElasticsearchSearchStore)
    client: Any = case.store.client
    prefix = case.store.index_prefix
    # Elasticsearch 8+ refuses wildcard deletes (action.destructive_requires_name): resolve the names first.
    found = await client.indices.get(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    for name in sorted(found):
        await client.options(ignore_status=404).indices.delete(index=name)
    await client.options(ignore_status=404).ingest.delete_pipeline(id=f"{prefix}-poison")


@pytest.fixture(params=["embedded", "elasticsearch"])
async def search(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SearchStoreCase]:
    if request.param == "embedded":
        case = _embedded(tmp_path)
    else:
        url = request.getfixturevalue("es_url")
        if url is None:
            pytest.skip(NO_ES)
        case = _elasticsearch(url)
    try:
        yield case
    finally:
        if case.id == "elasticsearch":
            await _remove_es_indices(case)
        await case.store.aclose()
