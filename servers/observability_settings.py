"""The ``telemetry:`` and ``metrics:`` sections of ``dataproducts.yaml``: traces out, metrics scraped.

Example::

    telemetry: {otlp_endpoint: "http://otel-collector:4318/v1/traces", service_name: dataproducts}
    metrics: {enabled: true, path: /metrics, require_token: false}

Neither is required. With no ``otlp_endpoint`` (and no ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` in the environment) spans go to whatever tracer provider the
process has, the no-op one unless something installed another. ``telemetry.enabled: false`` creates
no spans at all.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MetricsConfig", "TelemetryConfig"]

_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


class TelemetryConfig(BaseModel):
    """OpenTelemetry traces: one span per tool call and resource read, exported over OTLP/HTTP when configured."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: no spans at all (not even no-op ones)")
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; default: the OTEL_* environment",
    )
    service_name: str | None = Field(default=None, description="service.name of exported spans; default: dataproducts")

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"telemetry.otlp_endpoint must be an http:// or https:// URL, not {value[:100]!r}")
        return value


class MetricsConfig(BaseModel):
    """Prometheus metrics served by ``serve --http`` on the same host and port as MCP."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="serve the metrics at path")
    path: str = Field(default="/metrics", description="where the metrics are served")
    require_token: bool = Field(
        default=False,
        description="true: a scrape needs a principal's bearer token, like MCP; false: served before the bearer check",
    )

    @field_validator("path")
    @classmethod
    def _url_path(cls, value: str) -> str:
        if not _PATH.fullmatch(value):
            raise ValueError(
                f"metrics.path must be a URL path such as /metrics (a leading /, then letters, digits, . _ ~ - /), "
                f"not {value[:100]!r}"
            )
        return value
