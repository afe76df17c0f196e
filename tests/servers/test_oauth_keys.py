"""Issuer keys (fetched JWKS, local key files), claim mapping, required scopes and the auth settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.types import Receive, Scope, Send

from catalog.audit import AuditLog
from catalog.errors import ConfigError
from catalog.registry import Registry
from servers._jwks import KeyLookupError, RemoteJWKS
from servers.auth import BearerAuthMiddleware, TokenRejectedError
from servers.demo import DemoWorkspace
from servers.oauth import OAuthVerifier, claim_at
from servers.resource_metadata import metadata_url
from servers.settings import Settings, load_settings
from tests.servers.oauth_issuer import Issuer, free_port, running_issuer

pytestmark = pytest.mark.anyio

RESOURCE = "https://data.example.org/mcp"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


def offline_issuer() -> Issuer:
    issuer = Issuer()
    issuer.url = "https://sso.example.org"
    return issuer


def oauth_settings(demo: DemoWorkspace, issuer: Issuer, **auth: Any) -> Settings:
    entry = {"issuer": issuer.issuer, **auth.pop("issuer_entry", {})}
    return load_settings(demo.config_path, auth={"mode": "oauth", "resource": RESOURCE, "issuers": [entry], **auth})


async def test_made_up_key_ids_refetch_the_jwks_at_most_once_per_interval(issuer: Issuer) -> None:
    keys = RemoteJWKS(f"{issuer.url}/jwks", cache_s=300, refetch_s=60, timeout_s=5)
    await keys.key_for(issuer.keys[0].kid)
    for n in range(20):
        with pytest.raises(KeyLookupError, match="no key with id"):
            await keys.key_for(f"made-up-{n}")
    assert issuer.jwks_fetches == keys.fetches == 1


async def test_keys_already_fetched_stay_in_use_while_the_issuer_is_down() -> None:
    with running_issuer() as issuer:
        keys = RemoteJWKS(f"{issuer.url}/jwks", cache_s=0.01, refetch_s=0, timeout_s=2)
        kid = issuer.keys[0].kid
        fetched = await keys.key_for(kid)
    await anyio.sleep(0.05)  # the cache is stale and the issuer gone: the refetch fails
    assert await keys.key_for(kid) == fetched
    with pytest.raises(KeyLookupError, match="no key with id 'rotated'") as unknown:
        await keys.key_for("rotated")
    assert not unknown.value.unavailable and keys.fetches == 1


async def test_an_unreachable_jwks_makes_the_token_uncheckable_not_invalid(demo: DemoWorkspace) -> None:
    issuer = offline_issuer()
    dead = f"http://127.0.0.1:{free_port()}/jwks"
    verifier = OAuthVerifier(oauth_settings(demo, issuer, issuer_entry={"jwks_uri": dead}, timeout_s=2))
    with pytest.raises(TokenRejectedError, match="could not be fetched") as refused:
        await verifier.authenticate(issuer.token(aud=RESOURCE, sub="eve"))
    assert refused.value.unavailable


@pytest.mark.parametrize("form", ["pem", "jwks"])
async def test_a_local_key_file_checks_tokens_without_the_issuer(
    demo: DemoWorkspace, tmp_path: Path, form: str
) -> None:
    issuer = offline_issuer()  # never started: air-gapped
    key = issuer.keys[0]
    path = tmp_path / f"issuer.{form}"
    if form == "pem":
        path.write_bytes(key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    else:
        path.write_text(json.dumps({"keys": [key.public_jwk]}), encoding="utf-8")
    settings = oauth_settings(demo, issuer, issuer_entry={"jwks_file": str(path)}, roles_claim="groups")
    verifier = OAuthVerifier(settings)
    found = await verifier.authenticate(issuer.token(aud=RESOURCE, sub="u-7", groups=["sales-eu"], scope="a b"))
    assert (found.principal.name, found.principal.roles, found.principal.scopes) == (
        "u-7",
        frozenset({"sales-eu"}),
        frozenset({"a", "b"}),
    )
    with pytest.raises(TokenRejectedError, match="audience"):
        await verifier.authenticate(issuer.token(aud="https://elsewhere.example.org/mcp", sub="u-7"))


async def test_a_configured_principal_of_the_same_name_adds_its_roles(demo: DemoWorkspace, tmp_path: Path) -> None:
    issuer = offline_issuer()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [issuer.keys[0].public_jwk]}), encoding="utf-8")
    verifier = OAuthVerifier(oauth_settings(demo, issuer, issuer_entry={"jwks_file": str(path)}))
    found = await verifier.authenticate(issuer.token(aud=RESOURCE, sub="ana", roles=["support"]))
    assert found.principal.roles == {"support", "analyst", "sales-eu"}  # demo config: ana is analyst, sales-eu


def test_claims_are_found_by_dotted_path_or_by_a_name_holding_dots() -> None:
    claims = {"realm_access": {"roles": ["a"]}, "https://example.org/roles": ["b"]}
    assert claim_at(claims, "realm_access.roles") == ["a"]
    assert claim_at(claims, "https://example.org/roles") == ["b"]
    assert claim_at(claims, "realm_access.groups") is None


async def test_a_token_without_a_scope_every_request_needs_gets_403(demo: DemoWorkspace, tmp_path: Path) -> None:
    issuer = offline_issuer()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [issuer.keys[0].public_jwk]}), encoding="utf-8")
    settings = oauth_settings(demo, issuer, issuer_entry={"jwks_file": str(path)}, required_scopes=["mcp"])

    async def answered(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        log = AuditLog.from_registry(registry)
        app = BearerAuthMiddleware(answered, OAuthVerifier(settings), log, metadata_url(settings), ["mcp"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://data.example.org") as http:
            without = await http.post(
                "/mcp", headers={"Authorization": f"Bearer {issuer.token(aud=RESOURCE, sub='zoe')}"}
            )
            with_scope = issuer.token(aud=RESOURCE, sub="zoe", scope="mcp other")
            allowed = await http.post("/mcp", headers={"Authorization": f"Bearer {with_scope}"})
        (row,) = log.query(principal="zoe", limit=10)
    finally:
        registry.close()
    assert without.status_code == 403 and allowed.status_code == 204
    assert 'error="insufficient_scope", scope="mcp"' in without.headers["www-authenticate"]
    assert (
        'resource_metadata="https://data.example.org/.well-known/oauth-protected-resource/mcp"'
        in (without.headers["www-authenticate"])
    )
    assert (row.tool, row.outcome, row.error_code) == ("http", "denied", "insufficient_scope")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"mode": "oauth", "issuers": [{"issuer": "https://i", "jwks_uri": "https://i/k"}]},
            "auth.resource is required",
        ),
        ({"mode": "oauth", "resource": RESOURCE}, "oauth mode needs at least one issuer"),
        (
            {
                "mode": "oauth",
                "resource": RESOURCE,
                "issuers": [{"issuer": "https://i", "jwks_uri": "https://i/k", "algorithms": ["HS256"]}],
            },
            "never HS\\* with an issuer's public key",
        ),
        ({"mode": "oauth", "resource": RESOURCE, "issuers": [{"issuer": "https://i"}]}, "set jwks_uri"),
        (
            {
                "mode": "oauth",
                "resource": RESOURCE,
                "issuers": [{"issuer": "https://i", "introspection_endpoint": "https://i/in"}],
            },
            "needs client_id and client_secret",
        ),
        ({"tool_scopes": {"drop_table": ["x"]}}, "unknown tool\\(s\\) \\['drop_table'\\]"),
        ({"mode": "ldap"}, "auth.mode"),
    ],
    ids=["no resource", "no issuer", "HS256", "no keys", "introspection secret", "unknown tool", "unknown mode"],
)
def test_invalid_auth_settings_are_refused_with_what_would_be_valid(
    demo: DemoWorkspace, auth: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(demo.config_path, auth=auth)


def test_an_unreadable_key_file_is_a_config_error(demo: DemoWorkspace, tmp_path: Path) -> None:
    settings = oauth_settings(demo, offline_issuer(), issuer_entry={"jwks_file": str(tmp_path / "absent.pem")})
    with pytest.raises(ConfigError, match="cannot read the key file"):
        OAuthVerifier(settings)
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', encoding="utf-8")
    settings = oauth_settings(demo, offline_issuer(), issuer_entry={"jwks_file": str(garbage)})
    with pytest.raises(ConfigError, match="no usable public signature key"):
        OAuthVerifier(settings)


def _readme_yaml_blocks(heading: str) -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_readme_keycloak_configuration_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPRODUCTS_OAUTH_CLIENT_SECRET", "from-the-environment")
    config = tmp_path / "dataproducts.yaml"
    config.write_text(_readme_yaml_blocks("### Keycloak example"), encoding="utf-8")
    auth = load_settings(config).auth
    (issuer,) = auth.issuers
    assert issuer.client_secret is not None and issuer.client_secret.get_secret_value() == "from-the-environment"
    assert (auth.audiences, auth.roles_claim) == (["https://data.example.org/mcp"], "realm_access.roles")
    assert auth.tool_scopes == {"run_sql": ["dataproducts:sql"]}
    assert auth.product_scopes == {"shop.customers": ["dataproducts:pii"]}


async def test_the_readme_air_gapped_configuration_checks_a_keycloak_shaped_token(tmp_path: Path) -> None:
    issuer = offline_issuer()
    issuer.url = "https://sso.example.org"  # issuer: https://sso.example.org/realms/data, as in the README
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "data-realm.json").write_text(json.dumps({"keys": [issuer.keys[0].public_jwk]}), "utf-8")
    config = tmp_path / "dataproducts.yaml"
    config.write_text(_readme_yaml_blocks("### Air-gapped sites"), encoding="utf-8")
    verifier = OAuthVerifier(load_settings(config))
    token = issuer.token(
        sub="f81d4fae",
        preferred_username="eve",
        aud=["https://data.example.org/mcp", "account"],
        realm_access={"roles": ["sales-eu", "default-roles-data"]},
        scope="openid profile",
    )
    found = await verifier.authenticate(token)
    assert (found.principal.name, found.principal.roles) == ("eve", frozenset({"sales-eu", "default-roles-data"}))
