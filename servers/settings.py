"""Configuration at the edge: one ``dataproducts.yaml`` plus ``DATAPRODUCTS_*`` environment variables.

Environment variables win over the file; nested fields use ``__`` (``DATAPRODUCTS_LIMITS__MAX_ROWS=500``).
Secrets are never inlined in the file: write ``{"$env": "PG_PASSWORD"}`` (or ``$env: PG_URL`` in block
style) wherever a value should come from the environment. Library code receives the plain models
below, never reads the environment itself.

Example::

    registry_url: sqlite:///.dataproducts/registry.db
    hash_salt: {$env: DATAPRODUCTS_SALT}
    connections:
      shop: {kind: sqlite, url: "sqlite:///data/shop.db"}
      analytics: {kind: duckdb, files: {order_facts: data/order_facts.parquet}}
    principals:
      - {name: ana, roles: [analyst], token_sha256: 9f86d08...}
    stdio_principal: ana
    limits: {max_rows: 1000, max_bytes: 4000000, timeout_s: 30}
    server: {host: 127.0.0.1, port: 8765, tools: [search_products, describe_product, query_product, run_sql]}
    checks: {every: 15m}          # serve runs the quality checks this often
    freshness: {cache_s: 60}      # a product's as_of is measured at most this often
    auth: {mode: tokens}          # or oauth: see servers/auth_config.py
    telemetry: {otlp_endpoint: "http://localhost:4318/v1/traces"}   # spans over OTLP (optional)
    metrics: {require_token: false}                                  # GET /metrics for Prometheus
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from catalog.contract import parse_duration
from catalog.errors import ConfigError
from catalog.principal import Principal
from catalog.query import Limits
from connectors.base import ConnectionConfig
from connectors.search_stores import SearchStoreConfig
from servers.auth_config import AuthConfig
from servers.observability_settings import MetricsConfig, TelemetryConfig

__all__ = [
    "CONFIG_FILE",
    "CatalogPageConfig",
    "ChecksConfig",
    "FreshnessConfig",
    "TOOL_NAMES",
    "PrincipalConfig",
    "ModelsConfig",
    "ServerConfig",
    "Settings",
    "hash_token",
    "load_settings",
]

CONFIG_FILE = "dataproducts.yaml"
ToolName = Literal[
    "search_products",
    "describe_product",
    "query_product",
    "run_sql",
    "search_documents",
    "get_lineage",
    "get_quality",
    "list_metrics",
    "query_metrics",
]
TOOL_NAMES: tuple[str, ...] = get_args(ToolName)


def hash_token(token: str) -> str:
    """The sha256 hex digest stored in configuration for a bearer token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PrincipalConfig(BaseModel):
    """A caller: its roles and, for HTTP, the sha256 of its bearer token (never the token itself)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    def to_principal(self) -> Principal:
        return Principal(name=self.name, roles=frozenset(self.roles))


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    path: str = "/mcp"
    tools: list[ToolName] = Field(default_factory=lambda: list(get_args(ToolName)), description="tool allow-list")
    max_request_bytes: int = Field(
        default=1_048_576, ge=16_384, description="HTTP request bodies over this size get 413 before they are parsed"
    )
    keep_alive_s: float = Field(
        default=65,
        gt=0,
        description="idle HTTP connections are closed after this long; keep it above the idle timeout of a "
        "proxy or client in front (a shorter one races with requests sent on the idle connection)",
    )


class CatalogPageConfig(BaseModel):
    """The read-only catalog page ``serve --http`` offers people under ``path`` (see servers/catalog_page)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    path: str = Field(default="/catalog", description="URL prefix, e.g. /catalog")
    session_ttl_s: float = Field(default=8 * 3600, ge=60, le=30 * 86400, description="a login lasts this long")
    sample_rows: int = Field(default=20, ge=1, le=200, description="rows of the governed sample on a product page")

    @field_validator("path")
    @classmethod
    def _url_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value) or "/../" in value + "/" or "/./" in value + "/":
            raise ValueError(f"{value!r} is no URL prefix; use a path like /catalog (letters, digits, . _ ~ -)")
        return value


class ModelsConfig(BaseModel):
    """Local GGUF models: names of models built by ``dataproducts models build`` or paths to any GGUF file."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(
        default=None, description="default: $DATAPRODUCTS_MODELS_DIR or ~/.cache/dataproducts/models"
    )
    embedding: str = Field(default="all-minilm-l6-v2-q8_0", description="embedding model name or .gguf path")
    chat: str = Field(default="smollm2-135m-instruct-q4_1", description="chat model (for `ask`) name or .gguf path")
    threads: int | None = Field(default=None, ge=1, description="llama.cpp threads; default: all cores")


class ChecksConfig(BaseModel):
    """Quality checks on a schedule: ``serve`` runs every product's checks each ``every`` (off when unset)."""

    model_config = ConfigDict(extra="forbid")
    every: str | None = Field(default=None, description="run the checks this often while serving: 15m, 1h, 1d")

    @field_validator("every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value).total_seconds() < 1:
            raise ValueError("checks.every must be at least 1s")
        return value

    @property
    def interval_s(self) -> float | None:
        return None if self.every is None else parse_duration(self.every).total_seconds()


class FreshnessConfig(BaseModel):
    """How often a product's freshness (``max`` of its freshness column) is measured: at most once per
    ``cache_s`` seconds per server, whatever the number of reads."""

    model_config = ConfigDict(extra="forbid")
    cache_s: float = Field(default=60.0, ge=0, description="seconds a measured as_of is reused")


def _resolve_env_refs(value: Any, where: str = "") -> Any:
    """Replace ``{"$env": "NAME"}`` anywhere in the raw config with the variable's value."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            name = value["$env"]
            if name not in os.environ:
                raise ConfigError(f"{where or 'config'}: environment variable {name!r} is referenced but not set")
            return os.environ[name]
        return {k: _resolve_env_refs(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_refs(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class Settings(BaseSettings):
    """Everything a server or CLI run needs. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="DATAPRODUCTS_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Field(default=Path("."), description="directory relative paths are resolved against")
    registry_url: str = Field(default="", description="SQLAlchemy URL; default: SQLite file in .dataproducts/")
    hash_salt: SecretStr | None = Field(default=None, description="secret salt of hash masking")
    contract_cache_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="seconds a server reuses a registered contract (its policy included) before reading the "
        "registry again: a registration elsewhere reaches running servers within this time",
    )
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    principals: list[PrincipalConfig] = Field(default_factory=list)
    stdio_principal: str | None = Field(default=None, description="principal of stdio sessions")
    limits: Limits = Field(default_factory=Limits)
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    search: SearchStoreConfig = Field(default_factory=SearchStoreConfig, description="where chunks are indexed")
    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="scheduled quality checks")
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig, description="freshness measurement")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="HTTP authentication: tokens or oauth")
    catalog_page: CatalogPageConfig = Field(default_factory=CatalogPageConfig, description="the catalog page")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="OpenTelemetry traces")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics over HTTP")

    @field_validator("auth")
    @classmethod
    def _known_tools(cls, value: AuthConfig) -> AuthConfig:
        unknown = sorted(set(value.tool_scopes) - set(TOOL_NAMES))
        if unknown:
            raise ValueError(f"auth.tool_scopes names unknown tool(s) {unknown}; tools are {list(TOOL_NAMES)}")
        return value

    @field_validator("connections", mode="before")
    @classmethod
    def _name_connections(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    def resolved_registry_url(self) -> str:
        if self.registry_url:
            return _resolve_sqlite_url(self.registry_url, self.workspace)
        return f"sqlite:///{(self.workspace / '.dataproducts' / 'registry.db').resolve()}"

    def connection(self, name: str) -> ConnectionConfig:
        """The named connection with relative paths resolved against the workspace.

        Raises:
            ConfigError: no such connection; the message lists the configured ones.
        """
        config = self.connections.get(name)
        if config is None:
            raise ConfigError(f"unknown connection {name!r}; configured connections are {sorted(self.connections)}")
        updates: dict[str, Any] = {}
        if config.url is not None:
            updates["url"] = SecretStr(_resolve_sqlite_url(config.url.get_secret_value(), self.workspace))
        if config.path is not None:
            updates["path"] = str(self._resolve(config.path))
        if config.files:
            updates["files"] = {k: str(self._resolve(v)) for k, v in config.files.items()}
        return config.model_copy(update=updates)

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.workspace / p).resolve()

    def principal(self, name: str) -> Principal:
        """Raises ConfigError when no principal has that name."""
        for p in self.principals:
            if p.name == name:
                return p.to_principal()
        raise ConfigError(f"unknown principal {name!r}; configured principals are {[p.name for p in self.principals]}")

    def principal_for_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for p in self.principals:
            if p.token_sha256 is not None and hmac.compare_digest(digest, p.token_sha256):
                return p.to_principal()
        return None

    def require_salt(self) -> str:
        """Raises ConfigError when no hash salt is configured (hash masking would be guessable)."""
        if self.hash_salt is None or not self.hash_salt.get_secret_value():
            raise ConfigError(
                "hash_salt is not set: set it in dataproducts.yaml as {$env: DATAPRODUCTS_HASH_SALT} "
                "or export DATAPRODUCTS_HASH_SALT to a long random string"
            )
        return self.hash_salt.get_secret_value()


def _resolve_sqlite_url(url: str, workspace: Path) -> str:
    """Make ``sqlite:///relative.db`` URLs relative to the workspace, not the current directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((workspace / url[len(prefix) :]).resolve())
    return url


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``dataproducts.yaml`` (default: ``$DATAPRODUCTS_CONFIG`` or ./dataproducts.yaml) and the environment.

    Raises:
        ConfigError: the file is missing (when given explicitly), not YAML, or fails validation; the
            message names the field and what would be valid.
    """
    explicit = config_path is not None or "DATAPRODUCTS_CONFIG" in os.environ
    path = Path(config_path or os.environ.get("DATAPRODUCTS_CONFIG", CONFIG_FILE)).expanduser()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        data = _resolve_env_refs(loaded)
        data.setdefault("workspace", str(path.resolve().parent))
    elif explicit:
        raise ConfigError(f"{path}: configuration file not found (run `dataproducts demo` to create a workspace)")
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: invalid configuration: {problems}") from exc
