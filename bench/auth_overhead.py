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

    python bench/auth_overhead.py --calls 5000
    python bench/auth_overhead.py --smoke          # 200 calls: that it runs (for CI)
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

from catalog.audit import AuditLog  # noqa: E402
from catalog.registry import Registry  # noqa: E402
from servers.auth import Authenticator, BearerAuthMiddleware, HashedTokens  # noqa: E402
from servers.auth_config import AuthConfig  # noqa: E402
from servers.oauth import OAuthVerifier  # noqa: E402
from servers.resource_metadata import metadata_url  # noqa: E402
from servers.settings import PrincipalConfig, Settings, hash_token  # noqa: E402
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
    parser.add_argument("--smoke", action="store_true", help="200 calls, for CI")
    args = parser.parse_args()
    calls = 200 if args.smoke else args.calls
    return anyio.run(run, calls, max(calls // 10, 20))


if __name__ == "__main__":
    sys.exit(main())
