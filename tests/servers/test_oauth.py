"""OAuth 2.1 resource server over real HTTP: a real issuer on loopback, signed tokens, the SDK client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from catalog.audit import AuditLog, AuditRecord
from catalog.registry import Registry
from servers.demo import DemoWorkspace
from servers.http import create_http_app
from servers.settings import Settings, load_settings
from tests.servers.oauth_issuer import CLIENT_ID, CLIENT_SECRET, Issuer, free_port, new_key, running_issuer, serve

pytestmark = pytest.mark.anyio

SQL_SCOPE = "dataproducts:sql"
PII_SCOPE = "dataproducts:pii"


@dataclass
class Deployment:
    issuer: Issuer
    settings: Settings
    url: str  # the MCP endpoint, also the resource (audience)

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")

    def token(self, **claims: Any) -> str:
        """A token for this resource, for eve (sales-eu) with read scope unless ``claims`` say otherwise."""
        defaults: dict[str, Any] = {
            "sub": "u-eve",
            "email": "eve@example.org",
            "aud": self.url,
            "realm_access": {"roles": ["sales-eu"]},
            "scope": "openid dataproducts:read",
        }
        return self.issuer.token(**{**defaults, **claims})


@pytest.fixture(scope="module")
def deployment(demo: DemoWorkspace) -> Iterator[Deployment]:
    with running_issuer() as issuer:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        auth = {
            "mode": "oauth",
            "resource": url,
            "issuers": [
                {
                    "issuer": issuer.issuer,
                    "jwks_uri": f"{issuer.url}/jwks",
                    "introspection_endpoint": f"{issuer.url}/introspect",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                }
            ],
            "principal_claim": "email",
            "roles_claim": "realm_access.roles",
            "scopes_supported": ["dataproducts:read"],
            "tool_scopes": {"run_sql": [SQL_SCOPE]},
            "product_scopes": {"shop.customers": [PII_SCOPE]},
            "jwks_refetch_s": 0,
        }
        settings = load_settings(demo.config_path, auth=auth)
        with serve(create_http_app(settings), port):
            yield Deployment(issuer, settings, url)


@pytest.fixture
def audit_log(deployment: Deployment) -> Iterator[AuditLog]:
    registry = Registry.from_url(deployment.settings.resolved_registry_url())
    try:
        yield AuditLog.from_registry(registry)
    finally:
        registry.close()


def rows_since(log: AuditLog, count_before: int, principal: str) -> list[AuditRecord]:
    rows = log.query(principal=principal, limit=10_000)
    return rows[: len(rows) - count_before]


@asynccontextmanager
async def mcp_client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as transport,
        Client(streamable_http_client(url, http_client=transport)) as client,
    ):
        yield client


async def regions(client: Client) -> list[str]:
    result = await client.call_tool(
        "query_product", {"product": "shop.orders", "group_by": ["region"], "aggregates": [{"fn": "count", "as": "n"}]}
    )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return sorted(row[0] for row in result.structured_content["rows"])


def post_tools_list(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)


# --- metadata and challenges -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_the_protected_resource_metadata_names_the_issuer_and_the_scopes(deployment: Deployment, path: str) -> None:
    response = httpx.get(deployment.base + path)
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == deployment.url
    assert document["authorization_servers"] == [deployment.issuer.issuer]
    assert set(document["scopes_supported"]) == {"dataproducts:read", SQL_SCOPE, PII_SCOPE}
    assert document["bearer_methods_supported"] == ["header"]


def test_a_request_without_a_token_is_challenged_with_the_metadata_url(deployment: Deployment) -> None:
    response = post_tools_list(deployment.url, None)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'resource_metadata="{deployment.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code without credentials
    assert response.json()["error"]["code"] == "unauthorized"


# --- identity: claims become the principal -----------------------------------------------------------


async def test_the_roles_claim_applies_the_row_filters_of_the_role(deployment: Deployment, audit_log: AuditLog) -> None:
    before = len(audit_log.query(principal="eve@example.org", limit=10_000))
    everyone = deployment.token(email="max@example.org", realm_access={"roles": ["sales"]})
    async with mcp_client(deployment.url, deployment.token()) as eve, mcp_client(deployment.url, everyone) as max_:
        assert await regions(eve) == ["EU"]
        assert len(await regions(max_)) > 1
    (row,) = rows_since(audit_log, before, "eve@example.org")
    assert (row.tool, row.product, row.outcome) == ("query_product", "shop.orders", "ok")


# --- refusals ------------------------------------------------------------------------------------------


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 JWT keyed with ``secret`` (built by hand: PyJWT rightly refuses a PEM as an HMAC key)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + b"." + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def _refusals(d: Deployment) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    stranger = new_key("RS256")
    stranger.kid = d.issuer.keys[0].kid  # same key id, another key: the signature cannot verify
    public_pem = d.issuer.keys[0].private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": d.issuer.issuer, "aud": d.url, "email": "eve@example.org", "exp": now + 300}
    return {
        "expired": (d.token(exp=now - 3600, iat=now - 7200, nbf=now - 7200), "expired"),
        "wrong audience": (d.token(aud="https://other.example.org/mcp"), "audience"),
        "wrong issuer": (d.token(iss="https://evil.example.org/realms/data"), "issuer"),
        "bad signature": (d.issuer.token(stranger, **claims), "signature"),
        "not yet valid": (d.token(nbf=now + 3600), "not valid yet"),
        "alg none": (jwt.encode(claims, None, algorithm="none"), "accepted algorithms"),
        "HS256 with the public key": (_hs256(claims, public_pem, d.issuer.keys[0].kid), "accepted algorithms"),
        "no principal claim": (d.token(email=None), "'email' claim"),
        "unknown opaque token": ("not-a-jwt-and-unknown", "not active"),
        "opaque token with dots": ("abc.def.ghi", "not active"),
    }


REFUSALS = [
    "expired",
    "wrong audience",
    "wrong issuer",
    "bad signature",
    "not yet valid",
    "alg none",
    "HS256 with the public key",
    "no principal claim",
    "unknown opaque token",
    "opaque token with dots",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_token_gets_401_invalid_token_and_an_anonymous_audit_row(
    deployment: Deployment, audit_log: AuditLog, case: str
) -> None:
    token, reason = _refusals(deployment)[case]
    before = len(audit_log.query(principal="anonymous", limit=10_000))
    response = post_tools_list(deployment.url, token)
    assert response.status_code == 401, response.text
    assert reason in response.json()["error"]["message"]
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge
    (row,) = rows_since(audit_log, before, "anonymous")
    assert (row.tool, row.outcome, row.error_code) == ("http", "denied", "unauthorized")


def test_a_refusal_quoting_what_the_client_sent_stays_short(deployment: Deployment) -> None:
    response = post_tools_list(deployment.url, deployment.token(iss="https://evil.example.org/" + "x" * 10_000))
    assert response.status_code == 401
    assert len(response.json()["error"]["message"]) < 400 and len(response.headers["www-authenticate"]) < 600


def test_expiry_within_the_leeway_is_accepted(deployment: Deployment) -> None:
    now = int(time.time())
    response = post_tools_list(deployment.url, deployment.token(exp=now - 5, iat=now - 300, nbf=now - 300))
    assert response.status_code not in (401, 403)


async def test_a_key_added_by_the_issuer_is_picked_up_by_its_new_key_id(deployment: Deployment) -> None:
    rotated = new_key("ES256")
    deployment.issuer.keys.append(rotated)
    fetches = deployment.issuer.jwks_fetches
    token = deployment.issuer.token(
        rotated, sub="u-eve", email="eve@example.org", aud=deployment.url, realm_access={"roles": ["sales-eu"]}
    )
    async with mcp_client(deployment.url, token) as eve:
        assert await regions(eve) == ["EU"]
    assert deployment.issuer.jwks_fetches == fetches + 1  # one refetch, then the cached set serves the session


# --- scopes ------------------------------------------------------------------------------------------


def test_a_tool_call_without_the_tools_scope_gets_403_insufficient_scope(
    deployment: Deployment, audit_log: AuditLog
) -> None:
    before = len(audit_log.query(principal="eve@example.org", limit=10_000))
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "run_sql", "arguments": {}}}
    headers = {"Authorization": f"Bearer {deployment.token()}", "Accept": "application/json, text/event-stream"}
    response = httpx.post(deployment.url, json=call, headers=headers)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert f'error="insufficient_scope", scope="{SQL_SCOPE}"' in challenge and "resource_metadata=" in challenge
    assert response.json()["error"]["code"] == "insufficient_scope"
    (row,) = rows_since(audit_log, before, "eve@example.org")
    assert (row.tool, row.outcome, row.error_code) == ("run_sql", "denied", "insufficient_scope")


async def test_the_tools_scope_lets_the_call_through(deployment: Deployment) -> None:
    token = deployment.token(scope=f"dataproducts:read {SQL_SCOPE}")
    async with mcp_client(deployment.url, token) as eve:
        result = await eve.call_tool("run_sql", {"sql": "SELECT DISTINCT region FROM shop.orders"})
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["rows"] == [["EU"]]


async def test_a_product_needing_a_scope_the_token_lacks_is_a_denied_tool_call(
    deployment: Deployment, audit_log: AuditLog
) -> None:
    analyst = {"email": "ann@example.org", "realm_access": {"roles": ["analyst"]}}
    before = len(audit_log.query(principal="ann@example.org", limit=10_000))
    async with mcp_client(deployment.url, deployment.token(**analyst)) as ann:
        refused = await ann.call_tool("query_product", {"product": "shop.customers", "limit": 1})
        orders = await ann.call_tool("query_product", {"product": "shop.orders", "limit": 1})
    assert refused.is_error and "insufficient_scope" in str(refused.content) and PII_SCOPE in str(refused.content)
    assert not orders.is_error
    rows = rows_since(audit_log, before, "ann@example.org")
    assert [(r.product, r.outcome, r.error_code) for r in reversed(rows)] == [
        ("shop.customers", "denied", "insufficient_scope"),
        ("shop.orders", "ok", None),
    ]
    async with mcp_client(deployment.url, deployment.token(**analyst, scope=PII_SCOPE)) as ann:
        granted = await ann.call_tool("query_product", {"product": "shop.customers", "limit": 1})
    assert not granted.is_error, granted.content


# --- opaque tokens -----------------------------------------------------------------------------------


async def test_an_opaque_token_is_checked_by_introspection(deployment: Deployment) -> None:
    token = deployment.issuer.opaque_token(
        sub="u-eve", email="eve@example.org", aud=deployment.url, realm_access={"roles": ["sales-eu"]}
    )
    async with mcp_client(deployment.url, token) as eve:
        assert await regions(eve) == ["EU"]
    deployment.issuer.opaque[token]["active"] = False  # revoked: refused at once (answers are not cached)
    assert post_tools_list(deployment.url, token).status_code == 401


def test_an_opaque_token_for_another_resource_is_refused(deployment: Deployment) -> None:
    token = deployment.issuer.opaque_token(email="eve@example.org", aud="https://other.example.org/mcp")
    response = post_tools_list(deployment.url, token)
    assert response.status_code == 401 and "audience" in response.json()["error"]["message"]


async def test_the_sdk_client_sees_the_tool_scope_refusal_as_an_error(deployment: Deployment) -> None:
    async with mcp_client(deployment.url, deployment.token()) as eve:
        with pytest.raises(MCPError):  # the SDK surfaces the 403 as an error response
            await eve.call_tool("run_sql", {"sql": "SELECT 1"})
        assert await regions(eve) == ["EU"]  # the session goes on


async def test_run_sql_over_a_product_needing_a_scope_the_token_lacks_is_denied(
    deployment: Deployment, audit_log: AuditLog
) -> None:
    token = deployment.token(email="ann@example.org", realm_access={"roles": ["analyst"]}, scope=SQL_SCOPE)
    before = len(audit_log.query(principal="ann@example.org", limit=10_000))
    async with mcp_client(deployment.url, token) as ann:
        result = await ann.call_tool("run_sql", {"sql": "SELECT count(*) FROM shop.customers"})
    assert result.is_error and "insufficient_scope" in str(result.content)
    (row,) = rows_since(audit_log, before, "ann@example.org")
    assert (row.tool, row.outcome, row.error_code) == ("run_sql", "denied", "insufficient_scope")


async def test_a_session_opened_with_one_identity_refuses_another_identitys_token(
    deployment: Deployment, audit_log: AuditLog
) -> None:
    opened: list[str] = []

    async def remember_session(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            opened.append(response.headers["mcp-session-id"])

    headers = {"Authorization": f"Bearer {deployment.token()}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [remember_session]}) as transport,
        Client(streamable_http_client(deployment.url, http_client=transport), mode="legacy") as eve,
    ):
        assert await regions(eve) == ["EU"]
        before = len(audit_log.query(principal="max@example.org", limit=10_000))
        other = deployment.token(email="max@example.org", realm_access={"roles": ["sales"]})
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "get_quality", "arguments": {}}}
        response = httpx.post(
            deployment.url,
            json=call,
            headers={
                "Authorization": f"Bearer {other}",
                "Mcp-Session-Id": opened[0],
                "Accept": "application/json, text/event-stream",
            },
        )
        assert response.status_code == 404
        (row,) = rows_since(audit_log, before, "max@example.org")
        assert (row.tool, row.outcome, row.error_code) == ("http", "denied", "foreign_session")
        assert await regions(eve) == ["EU"]
