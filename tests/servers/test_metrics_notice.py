"""What ``serve --http`` tells about who may scrape its metrics."""

from __future__ import annotations

from servers.cli.metrics_notice import metrics_notice
from servers.observability_settings import MetricsConfig
from servers.settings import ServerConfig, Settings


def notice(host: str, require_token: bool = False) -> str:
    return metrics_notice(Settings(server=ServerConfig(host=host), metrics=MetricsConfig(require_token=require_token)))


def test_loopback_metrics_need_no_token_and_say_so() -> None:
    assert notice("127.0.0.1") == "Prometheus metrics at http://127.0.0.1:8765/metrics (no token: this machine only)"
    assert "this machine only" in notice("::1")


def test_metrics_open_to_the_network_say_how_to_require_a_token() -> None:
    line = notice("0.0.0.0")
    assert "for anyone who reaches 0.0.0.0:8765" in line and "require_token: true" in line
    assert "for anyone" in notice("dataproducts.internal")


def test_metrics_behind_the_token_say_so() -> None:
    assert notice("0.0.0.0", require_token=True).endswith("(bearer token required)")
