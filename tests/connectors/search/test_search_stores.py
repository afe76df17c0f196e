"""Choosing the search store from configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from connectors.search_elasticsearch import ElasticsearchSearchStore, index_name
from connectors.search_embedded import EmbeddedSearchStore
from connectors.search_stores import SearchStoreConfig, search_store_for


def test_the_default_search_store_is_the_embedded_file(tmp_path: Path) -> None:
    store = search_store_for(SearchStoreConfig(path=str(tmp_path / "s.sqlite")))

    assert isinstance(store, EmbeddedSearchStore)
    assert store.path == tmp_path / "s.sqlite"


def test_an_elasticsearch_config_builds_a_store_without_contacting_the_cluster() -> None:
    config = SearchStoreConfig(
        kind="elasticsearch",
        url=SecretStr("https://es.invalid:9200"),
        api_key=SecretStr("s3cr3t-key"),
        index_prefix="dp",
    )

    store = search_store_for(config)

    assert isinstance(store, ElasticsearchSearchStore)
    assert store.index_prefix == "dp"
    assert "s3cr3t-key" not in repr(config) and "es.invalid" not in repr(config)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "elasticsearch"}, "needs 'url'"),
        ({"kind": "elasticsearch", "url": "http://x", "api_key": "k", "username": "u"}, "either api_key"),
        ({"kind": "solr"}, "kind"),
        ({"index_prefix": "Bad Prefix"}, "index_prefix"),
    ],
)
def test_an_unusable_search_config_says_what_is_wrong(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SearchStoreConfig.model_validate(fields)


def test_index_names_are_valid_and_distinct_for_distinct_products() -> None:
    assert index_name("dp", "sales.orders") == "dp-chunks-sales.orders"
    names = {index_name("dp", p) for p in ("Sales.Orders", "sales.orders", "sales orders", "sales_orders")}
    assert len(names) == 4
    assert all(n == n.lower() and " " not in n for n in names)
