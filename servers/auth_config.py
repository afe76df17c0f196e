"""How HTTP callers prove who they are: ``auth:`` in dataproducts.yaml.

Two modes:

``tokens`` (the default)
    Bearer tokens whose sha256 is listed under ``principals:``. For small setups.
``oauth``
    An OAuth 2.1 resource server (MCP authorization): access tokens issued by the organisation's
    identity provider, JWTs checked against the issuer's keys (its JWKS, or a local key file) or opaque
    tokens checked by RFC 7662 introspection. A claim names the principal and a claim gives its roles.

Example (Keycloak)::

    auth:
      mode: oauth
      resource: https://data.example.org/mcp
      issuers:
        - issuer: https://sso.example.org/realms/data
          jwks_uri: https://sso.example.org/realms/data/protocol/openid-connect/certs
      principal_claim: preferred_username
      roles_claim: realm_access.roles
      tool_scopes: {run_sql: [dataproducts:sql]}
      product_scopes: {"shop.customers": [dataproducts:pii]}
      page_client_id: dataproducts-catalog      # people sign in to the catalog page (PKCE S256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["ALGORITHMS", "AuthConfig", "IssuerConfig"]

#: Asymmetric JWS algorithms an issuer may sign with. ``none`` and the HMAC family (HS*) are never
#: accepted: a resource server holds only public keys, and HS* with a public key lets anyone sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class IssuerConfig(BaseModel):
    """One authorization server whose access tokens are accepted."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1, description="the exact `iss` of its tokens (its issuer identifier URL)")
    jwks_uri: AnyHttpUrl | None = Field(default=None, description="where its signing keys (a JWKS) are fetched")
    jwks_file: Path | None = Field(
        default=None, description="a local JWKS (.json) or PEM public key, for sites without access to the issuer"
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    introspection_endpoint: AnyHttpUrl | None = Field(
        default=None, description="RFC 7662 endpoint checking opaque (non-JWT) tokens"
    )
    client_id: str | None = Field(default=None, description="this server's client id at the introspection endpoint")
    client_secret: SecretStr | None = Field(default=None, description="its secret: write {$env: NAME}")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ALGORITHMS]
        if bad:
            raise ValueError(
                f"algorithm(s) {bad} not accepted: use asymmetric ones from {list(ALGORITHMS)} "
                "(never 'none', never HS* with an issuer's public key)"
            )
        return value

    @model_validator(mode="after")
    def _a_way_to_check_tokens(self) -> IssuerConfig:
        if self.jwks_uri is not None and self.jwks_file is not None:
            raise ValueError(f"issuer {self.issuer}: set jwks_uri or jwks_file, not both")
        if self.jwks_uri is None and self.jwks_file is None and self.introspection_endpoint is None:
            raise ValueError(
                f"issuer {self.issuer}: set jwks_uri (or jwks_file) to check JWT access tokens, "
                "or introspection_endpoint to check opaque ones"
            )
        if self.introspection_endpoint is not None and (self.client_id is None or self.client_secret is None):
            raise ValueError(f"issuer {self.issuer}: introspection_endpoint needs client_id and client_secret")
        return self


class AuthConfig(BaseModel):
    """``auth:``: how HTTP requests are authenticated (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["tokens", "oauth"] = "tokens"
    resource: AnyHttpUrl | None = Field(
        default=None,
        description="the public URL of the MCP endpoint (RFC 8707 resource, the tokens' audience); required "
        "in oauth mode; in tokens mode it is taken from the request when unset",
    )
    issuers: list[IssuerConfig] = Field(default_factory=list)
    audience: list[str] = Field(
        default_factory=list, description="accepted `aud` values; default: the resource URL alone"
    )
    principal_claim: str = Field(default="sub", min_length=1, description="the claim naming the principal")
    roles_claim: str = Field(
        default="roles", min_length=1, description="the claim listing roles; dots reach nested claims"
    )
    leeway_s: float = Field(default=30, ge=0, le=300, description="clock skew tolerated on exp, nbf and iat")
    scopes_supported: list[str] = Field(default_factory=list, description="advertised in the resource metadata")
    required_scopes: list[str] = Field(default_factory=list, description="scopes every request needs")
    tool_scopes: dict[str, list[str]] = Field(default_factory=dict, description="tool name -> scopes it needs")
    product_scopes: dict[str, list[str]] = Field(
        default_factory=dict, description="product name or glob (shop.*) -> scopes reading it needs"
    )
    jwks_cache_s: float = Field(default=300, gt=0, description="a fetched JWKS is reused this long")
    jwks_refetch_s: float = Field(
        default=30, ge=0, description="an unknown key id refetches the JWKS at most this often (key rotation)"
    )
    timeout_s: float = Field(default=5, gt=0, description="timeout of a JWKS fetch or an introspection call")
    page_client_id: str | None = Field(
        default=None,
        min_length=1,
        description="the catalog page's client id at the issuer: people sign in to the page with the "
        "authorization-code flow (PKCE S256); see servers/catalog_page/oauth_login.py",
    )
    page_client_secret: SecretStr | None = Field(
        default=None, description="its secret, for a confidential client: write {$env: NAME}"
    )
    page_issuer: str | None = Field(default=None, description="the issuer people sign in at; default: the first")
    page_authorization_endpoint: AnyHttpUrl | None = Field(
        default=None, description="set with page_token_endpoint where the issuer's metadata cannot be fetched"
    )
    page_token_endpoint: AnyHttpUrl | None = Field(default=None, description="see page_authorization_endpoint")
    page_scopes: list[str] = Field(
        default_factory=lambda: ["openid"], description="scopes the page asks for, besides required_scopes"
    )

    @model_validator(mode="after")
    def _oauth_is_complete(self) -> AuthConfig:
        if (self.page_authorization_endpoint is None) != (self.page_token_endpoint is None):
            raise ValueError(
                "auth: set both page_authorization_endpoint and page_token_endpoint, or neither "
                "(then they are read from the issuer's metadata)"
            )
        if self.page_client_id is None and self.page_client_secret is not None:
            raise ValueError("auth.page_client_secret is set without auth.page_client_id: set the page's client id too")
        if self.mode != "oauth":
            if self.page_client_id is not None:
                raise ValueError("auth.page_client_id needs auth.mode: oauth (people sign in at its issuers)")
            return self
        if self.resource is None:
            raise ValueError(
                "auth.resource is required in oauth mode: the public URL of the MCP endpoint, "
                "e.g. https://data.example.org/mcp"
            )
        if not self.issuers:
            raise ValueError("auth.issuers is empty: oauth mode needs at least one issuer (issuer, jwks_uri)")
        issuers = [i.issuer for i in self.issuers]
        if len(set(issuers)) != len(issuers):
            raise ValueError(f"auth.issuers lists an issuer twice: {issuers}")
        if sum(i.introspection_endpoint is not None for i in self.issuers) > 1:
            raise ValueError("auth.issuers: at most one issuer may have an introspection_endpoint")
        if self.page_issuer is not None and self.page_issuer not in issuers:
            raise ValueError(f"auth.page_issuer {self.page_issuer!r} is not one of auth.issuers: {issuers}")
        return self

    @property
    def audiences(self) -> list[str]:
        """The ``aud`` values a token must carry one of (RFC 8707: this resource)."""
        if self.audience or self.resource is None:
            return list(self.audience)
        return [str(self.resource).removesuffix("/")]

    @property
    def all_scopes(self) -> list[str]:
        """Every scope this server may ask for, for the resource metadata."""
        named = [*self.scopes_supported, *self.required_scopes]
        named += [s for scopes in (*self.tool_scopes.values(), *self.product_scopes.values()) for s in scopes]
        return list(dict.fromkeys(named))
