"""What ``serve --http`` says about its Prometheus metrics: where, and who may scrape them."""

from __future__ import annotations

import ipaddress

from servers.settings import Settings

__all__ = ["metrics_notice"]


def metrics_notice(settings: Settings) -> str:
    """One line: the metrics URL and who may read it, with the fix when anyone on the network could."""
    server, metrics = settings.server, settings.metrics
    url = f"http://{server.host}:{server.port}{metrics.path}"
    if metrics.require_token:
        return f"Prometheus metrics at {url} (bearer token required)"
    if _loopback(server.host):
        return f"Prometheus metrics at {url} (no token: this machine only)"
    return (
        f"Prometheus metrics at {url} with no token, for anyone who reaches {server.host}:{server.port}; "
        "set metrics: {require_token: true} to require a principal's bearer token"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
