"""Choosing the search store from configuration: :class:`SearchStoreConfig` and :func:`search_store_for`.

In ``dataproducts.yaml`` (``DATAPRODUCTS_SEARCH__*`` in the environment)::

    search: {kind: embedded, path: .dataproducts/search.sqlite}
    # or
    search:
      kind: elasticsearch
      url: {$env: ES_URL}                  # https://es.internal:9200
      api_key: {$env: ES_API_KEY}          # or username + password
      index_prefix: dataproducts
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from catalog.errors import ConfigError
from connectors.search_base import SearchStore
from connectors.search_elasticsearch import ElasticsearchSearchStore
from connectors.search_embedded import EmbeddedSearchStore

__all__ = ["SearchStoreConfig", "search_store_for"]

DEFAULT_PATH = ".dataproducts/search.sqlite"


class SearchStoreConfig(BaseModel):
    """Where chunks and their vectors live: one local file (``embedded``) or an Elasticsearch cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedded", "elasticsearch"] = "embedded"
    path: str = Field(default=DEFAULT_PATH, description="embedded: the SQLite file (relative to the workspace)")
    url: SecretStr | None = Field(default=None, description="elasticsearch: cluster URL, may carry user:password")
    index_prefix: str = Field(default="dataproducts", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: str | None = Field(default=None, description="elasticsearch: CA bundle for a private certificate")
    request_timeout: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SearchStoreConfig:
        if self.kind == "elasticsearch" and self.url is None:
            raise ValueError("search kind elasticsearch needs 'url' (e.g. https://localhost:9200)")
        if self.api_key is not None and self.username is not None:
            raise ValueError("give either api_key or username/password, not both")
        return self


def search_store_for(config: SearchStoreConfig) -> SearchStore:
    """A new (not yet opened) search store for ``config``; relative paths are the caller's to resolve.

    Raises:
        ConfigError: ``kind: elasticsearch`` without the client installed (install dataproducts[elasticsearch]).
    """
    if config.kind == "embedded":
        return EmbeddedSearchStore(config.path)
    if config.url is None:  # guarded by the validator; keeps the type checker informed
        raise ConfigError("search kind elasticsearch needs 'url'")
    return ElasticsearchSearchStore(
        config.url,
        index_prefix=config.index_prefix,
        api_key=config.api_key,
        username=config.username,
        password=config.password,
        verify_certs=config.verify_certs,
        ca_certs=config.ca_certs,
        request_timeout=config.request_timeout,
    )
