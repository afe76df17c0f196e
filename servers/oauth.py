"""``auth.mode: oauth``: OAuth 2.1 access tokens of the organisation's identity provider.

A JWT access token (three dot-separated parts) is checked locally: its ``iss`` must be a configured
issuer, its header's ``alg`` one of that issuer's asymmetric algorithms, its signature must verify with
the issuer's key named by ``kid`` (see :mod:`servers._jwks`), and ``exp``, ``nbf``, ``iat`` (with
``auth.leeway_s``) and ``aud`` (this resource, RFC 8707) must hold. Any other token goes to the RFC
7662 introspection endpoint when one is configured (:mod:`servers._introspection`).

The checked claims then name the principal: ``auth.principal_claim`` (``sub``, ``email``,
``preferred_username``...) its name, ``auth.roles_claim`` (``roles``, ``groups``,
``realm_access.roles``...) its roles, so ``role:<x>`` row filters and masks apply. A principal of the
same name under ``principals:`` adds its configured roles. The token's scopes (``scope``, or ``scp``)
travel with the principal: products listed under ``auth.product_scopes`` are readable only with
their scopes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from mcp.server.auth.provider import AccessToken

from catalog.principal import Principal
from servers._introspection import Introspector
from servers._jwks import FileKeys, KeyLookupError, RemoteJWKS
from servers.auth import Authenticated, Authenticator, HashedTokens, TokenRejectedError
from servers.auth_config import AuthConfig, IssuerConfig
from servers.settings import Settings

__all__ = ["OAuthVerifier", "authenticator_for", "claim_at"]

_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "the token's audience is not this resource"),
    (jwt.InvalidIssuerError, "the token's issuer does not match"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
]


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted ``path`` (``realm_access.roles``), or None. A claim whose own name holds
    the dots (``https://example.org/roles``) is found too."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> list[str]:
    """A claim holding names: a list of strings, or one space-separated string (OAuth ``scope``)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A JWT's header and claims, unverified, or None when ``token`` is not a JWT (an opaque token).

    Only to pick the issuer, key and algorithm that then verify it: PyJWT validates the token in
    full once, then.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


class OAuthVerifier:
    """An :class:`~servers.auth.Authenticator` for OAuth access tokens (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.config: AuthConfig = settings.auth
        self.settings = settings
        self.issuers: dict[str, IssuerConfig] = {i.issuer: i for i in self.config.issuers}
        self.keys: dict[str, FileKeys | RemoteJWKS] = {}
        self.introspector: Introspector | None = None
        for issuer in self.config.issuers:
            if issuer.jwks_file is not None:
                path = issuer.jwks_file if issuer.jwks_file.is_absolute() else settings.workspace / issuer.jwks_file
                self.keys[issuer.issuer] = FileKeys(path)
            elif issuer.jwks_uri is not None:
                self.keys[issuer.issuer] = RemoteJWKS(
                    str(issuer.jwks_uri),
                    cache_s=self.config.jwks_cache_s,
                    refetch_s=self.config.jwks_refetch_s,
                    timeout_s=self.config.timeout_s,
                )
            if issuer.introspection_endpoint is not None:
                self.introspector = Introspector(
                    issuer,
                    audiences=self.config.audiences,
                    leeway_s=self.config.leeway_s,
                    timeout_s=self.config.timeout_s,
                )

    async def aclose(self) -> None:
        """Close the introspection endpoint's connections."""
        if self.introspector is not None:
            await self.introspector.aclose()

    async def authenticate(self, token: str) -> Authenticated:
        peeked = _peek(token)
        if peeked is not None:
            claims = await self._jwt_claims(token, *peeked)
        elif self.introspector is not None:
            claims = await self.introspector.claims(token)
        else:
            raise TokenRejectedError("the token is not a well-formed JWT and no issuer has an introspection_endpoint")
        return self._identity(claims)

    async def _jwt_claims(self, token: str, header: dict[str, Any], unverified: dict[str, Any]) -> dict[str, Any]:
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejectedError(f"the token's issuer {iss!r} is not configured (accepted: {sorted(self.issuers)})")
        keys = self.keys.get(issuer.issuer)
        if keys is None:  # an issuer checked by introspection only
            if self.introspector is None or self.introspector.issuer != issuer.issuer:
                raise TokenRejectedError(f"issuer {issuer.issuer!r} has no keys configured to check a JWT")
            return await self.introspector.claims(token)
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise TokenRejectedError(f"the token is signed with {alg!r}; accepted algorithms are {issuer.algorithms}")
        kid = header.get("kid")
        try:
            key = await keys.key_for(kid if isinstance(kid, str) else None)
        except KeyLookupError as exc:
            raise TokenRejectedError(str(exc), unavailable=exc.unavailable) from exc
        if key.algorithm is not None and key.algorithm != alg:
            raise TokenRejectedError(f"the token's alg {alg!r} is not the alg {key.algorithm!r} of its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.config.audiences,
                issuer=issuer.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            reason = next((r for kind, r in _REASONS if isinstance(exc, kind)), "the token is invalid")
            raise TokenRejectedError(f"{reason} ({exc})") from exc
        return claims

    def _identity(self, claims: dict[str, Any]) -> Authenticated:
        name = claim_at(claims, self.config.principal_claim)
        if not isinstance(name, str | int) or not str(name):
            raise TokenRejectedError(f"the token has no {self.config.principal_claim!r} claim naming its principal")
        name = str(name)
        roles = set(_strings(claim_at(claims, self.config.roles_claim)))
        roles |= {r for p in self.settings.principals if p.name == name for r in p.roles}
        scopes = frozenset(_strings(claims.get("scope")) or _strings(claims.get("scp")))
        principal = Principal(
            name=name,
            roles=frozenset(roles),
            scopes=scopes,
            product_scopes=tuple((p, tuple(s)) for p, s in self.config.product_scopes.items()),
            tool_scopes=tuple((t, tuple(s)) for t, s in self.config.tool_scopes.items()),
        )
        exp = claims.get("exp")
        access = AccessToken(
            token="",
            client_id=name,
            scopes=sorted(scopes),
            expires_at=int(exp) if isinstance(exp, int | float) else None,
            subject=str(claims.get("sub")) if claims.get("sub") is not None else None,
            claims={"iss": claims.get("iss")},
        )
        return Authenticated(principal, access)


def authenticator_for(settings: Settings) -> Authenticator:
    """The authenticator ``auth.mode`` chooses: :class:`OAuthVerifier` or :class:`~servers.auth.HashedTokens`.

    Raises:
        ConfigError: tokens mode without any token configured; a key file that cannot be read.
    """
    return OAuthVerifier(settings) if settings.auth.mode == "oauth" else HashedTokens(settings)
