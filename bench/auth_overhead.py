"""What checking an OAuth access token costs per request, next to the hashed-token mode.

The HTTP authentication layer (:class:`servers.auth.BearerAuthMiddleware`) runs in front of an ASGI
app that answers at once, called directly (no sockets), in one process and event loop. Modes, called
interleaved, ``--calls`` times each after a warm-up:

- ``none``: the app without the middleware (the floor);
- ``tokens``: a hashed token (sha256 looked up under ``principals:``);
- ``jwt RS256`` / ``jwt ES256``: an OAuth JWT checked against the issuer's JWKS, fetched once from a
  loopback issuer and cached (signature, iss, aud, exp, nbf; claims mapped to a principal);
- ``introspection``: an opaque token checked at the issuer's RFC 7662 endpoint on loopback (not
  cached, so every request pays one HTTP round trip), for scale.

Printed: p50 and p95 per mode, the p50 added over ``none``, and the ratio of each mode's added p50 to
the ``tokens`` mode's. Exits 1 if a mode fails to authenticate.

With ``--http N``, the same comparison end to end: the demo workspace served twice over loopback HTTP
(``serve --http`` in two child processes, one per mode), one MCP session each, and N governed
``query_product`` calls (one row of ``shop.orders``) alternating between them: the p50 per call and
what the JWT mode adds to it.

    python bench/auth_overhead.py --calls 5000 --http 300
    python bench/auth_overhead.py --smoke          # 200 calls, 10 over HTTP: that it runs (for CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout: bench/, tests/

import anyio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from bench._http_load import http_client, served_over_http  # noqa: E402
from catalog.audit import AuditLog  # noqa: E402
from catalog.loader import load_contract_file  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.auth import Authenticator, BearerAuthMiddleware, HashedTokens  # noqa: E402
from servers.auth_config import AuthConfig  # noqa: E402
from servers.demo import build_demo_workspace  # noqa: E402
from servers.oauth import OAuthVerifier  # noqa: E402
from servers.resource_metadata import metadata_url  # noqa: E402
from servers.settings import PrincipalConfig, Settings, hash_token, load_settings  # noqa: E402
from tests.servers.oauth_issuer import CLIENT_ID, CLIENT_SECRET, new_key, running_issuer  # noqa: E402

RESOURCE = "https://data.example.org/mcp"


async def answered(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def one_call(app: ASGIApp, token: str) -> tuple[float, int]:
    """Seconds one request takes through ``app``, and its status."""
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "scheme": "https",
        "server": ("data.example.org", 443),
        "headers": [(b"host", b"data.example.org"), (b"authorization", f"Bearer {token}".encode())],
        "query_string": b"",
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    started = time.perf_counter()
    await app(scope, receive, send)
    return time.perf_counter() - started, status


async def run(calls: int, warmup: int) -> int:
    with running_issuer() as issuer, tempfile.TemporaryDirectory() as tmp:
        issuer.keys.append(new_key("ES256"))
        rsa_key, ec_key = issuer.keys
        auth = AuthConfig(
            mode="oauth",
            resource=RESOURCE,  # type: ignore[arg-type]
            issuers=[
                {  # type: ignore[list-item]
                    "issuer": issuer.issuer,
                    "jwks_uri": f"{issuer.url}/jwks",
                    "algorithms": ["RS256", "ES256"],
                    "introspection_endpoint": f"{issuer.url}/introspect",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                }
            ],
            roles_claim="realm_access.roles",
        )
        token = "dp_bench_" + "x" * 32
        principals = [PrincipalConfig(name="ana", roles=["sales-eu"], token_sha256=hash_token(token))]
        settings = Settings(workspace=Path(tmp), principals=principals, auth=auth)
        claims: dict[str, Any] = {"sub": "ana", "aud": RESOURCE, "realm_access": {"roles": ["sales-eu"]}}
        claims["exp"] = int(time.time()) + 3600
        opaque = issuer.opaque_token(**claims)
        registry = Registry.from_url(f"sqlite:///{tmp}/registry.db")
        oauth = OAuthVerifier(settings)
        try:
            audit = AuditLog.from_registry(registry)

            def guarded(authenticator: Authenticator) -> ASGIApp:
                return BearerAuthMiddleware(answered, authenticator, audit, metadata_url(settings))

            modes: dict[str, tuple[ASGIApp, str]] = {
                "none": (answered, token),
                "tokens": (guarded(HashedTokens(settings)), token),
                "jwt RS256": (guarded(oauth), issuer.token(rsa_key, **claims)),
                "jwt ES256": (guarded(oauth), issuer.token(ec_key, **claims)),
                "introspection": (guarded(oauth), opaque),
            }
            timings: dict[str, list[float]] = {m: [] for m in modes}
            for n in range(warmup + calls):
                for mode, (app, credential) in modes.items():
                    if mode == "introspection" and n % 10:  # an HTTP round trip: sample every 10th round
                        continue
                    seconds, status = await one_call(app, credential)
                    if status != 204:
                        print(f"{mode}: the request was refused with {status}", file=sys.stderr)
                        return 1
                    if n >= warmup:
                        timings[mode].append(seconds)
        finally:
            await oauth.aclose()
            registry.close()
        report(timings, issuer.jwks_fetches)
    return 0


async def over_http(calls: int, folder: Path) -> int:
    """``calls`` governed tool calls alternating between a tokens-mode and an oauth-mode server."""
    workspace = build_demo_workspace(folder / "ws")
    settings = load_settings(workspace.config_path)
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="bench")
    with running_issuer() as issuer:
        auth = {
            "mode": "oauth",
            "resource": RESOURCE,
            "issuers": [{"issuer": issuer.issuer, "jwks_uri": f"{issuer.url}/jwks"}],
            "roles_claim": "realm_access.roles",
        }
        oauth_settings = load_settings(workspace.config_path, auth=auth)
        jwt_token = issuer.token(
            sub="ana", aud=RESOURCE, exp=int(time.time()) + 3600, realm_access={"roles": ["analyst", "sales-eu"]}
        )
        arguments = {"product": "shop.orders", "columns": ["order_id", "region"], "limit": 1}
        timings: dict[str, list[float]] = {"tokens": [], "jwt RS256": []}
        with served_over_http(settings) as plain, served_over_http(oauth_settings) as oauth:
            async with (
                http_client(plain.url, workspace.tokens["ana"]) as tokens_client,
                http_client(oauth.url, jwt_token) as jwt_client,
            ):
                clients = {"tokens": tokens_client, "jwt RS256": jwt_client}
                for n in range(calls + max(calls // 10, 5)):
                    for mode, client in clients.items():
                        started = time.perf_counter()
                        result = await client.call_tool("query_product", arguments)
                        seconds = time.perf_counter() - started
                        if result.is_error or result.structured_content is None:
                            print(f"{mode}: the call failed: {result.content}", file=sys.stderr)
                            return 1
                        if n >= max(calls // 10, 5):
                            timings[mode].append(seconds)
    p50 = {m: statistics.median(t) * 1000 for m, t in timings.items()}
    table = Table(title="governed query_product over loopback HTTP (ms per call, alternating servers)")
    for column in ("mode", "calls", "p50", "added p50", "ratio"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode in timings:
        added = p50[mode] - p50["tokens"]
        table.add_row(
            mode, str(len(timings[mode])), f"{p50[mode]:.2f}", f"{added:+.2f}", f"{p50[mode] / p50['tokens']:.3f}x"
        )
    Console().print(table)
    return 0


def report(timings: dict[str, list[float]], fetches: int) -> None:
    p50 = {m: statistics.median(t) * 1e6 for m, t in timings.items()}
    floor = p50["none"]
    tokens_added = max(p50["tokens"] - floor, 1e-9)
    table = Table(title="authentication cost per request (µs; middleware over an app answering at once)")
    for column in ("mode", "calls", "p50", "p95", "added p50", "added vs tokens"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, samples in timings.items():
        p95 = statistics.quantiles(samples, n=20)[-1] * 1e6 if len(samples) >= 20 else max(samples) * 1e6
        added = p50[mode] - floor
        ratio = "" if mode == "none" else f"{added / tokens_added:.1f}x"
        table.add_row(mode, str(len(samples)), f"{p50[mode]:.1f}", f"{p95:.1f}", f"{added:+.1f}", ratio)
    Console().print(table)
    print(f"JWKS fetched {fetches} time(s) for all JWT calls (cached keys)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="timed requests per mode")
    parser.add_argument("--http", type=int, default=0, help="also time this many governed tool calls over HTTP")
    parser.add_argument("--smoke", action="store_true", help="200 calls, 10 over HTTP, for CI")
    args = parser.parse_args()
    calls = 200 if args.smoke else args.calls
    status = anyio.run(run, calls, max(calls // 10, 20))
    http_calls = 10 if args.smoke else args.http
    if status == 0 and http_calls:
        with tempfile.TemporaryDirectory() as folder:
            status = anyio.run(over_http, http_calls, Path(folder))
    return status


if __name__ == "__main__":
    sys.exit(main())
