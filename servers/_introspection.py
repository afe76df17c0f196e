"""RFC 7662 token introspection: ask the authorization server whether an opaque token is active.

The server authenticates to the endpoint with its client credentials (HTTP Basic, RFC 7662 §2.1).
An active token's answer is checked like a JWT's claims: issuer, audience (this resource), expiry and
not-before, with the configured leeway. Answers are not cached: a revoked token stops working at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx2

from servers.auth import TokenRejectedError
from servers.auth_config import IssuerConfig

__all__ = ["Introspector"]

logger = logging.getLogger(__name__)


class Introspector:
    """Checks opaque tokens at ``issuer.introspection_endpoint``."""

    def __init__(self, issuer: IssuerConfig, *, audiences: list[str], leeway_s: float, timeout_s: float) -> None:
        if issuer.introspection_endpoint is None or issuer.client_id is None or issuer.client_secret is None:
            raise ValueError("an Introspector needs an issuer with introspection_endpoint, client_id, client_secret")
        self.issuer = issuer.issuer
        self.endpoint = str(issuer.introspection_endpoint)
        self.credentials = httpx2.BasicAuth(issuer.client_id, issuer.client_secret.get_secret_value())
        self.audiences = audiences
        self.leeway_s = leeway_s
        self.timeout_s = timeout_s
        self._client = httpx2.AsyncClient(timeout=timeout_s)  # kept: connections and TLS setup are reused

    async def aclose(self) -> None:
        await self._client.aclose()

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of an active token issued for this resource.

        Raises:
            TokenRejectedError: inactive, expired, not yet valid, another issuer's or another resource's
                token; ``unavailable`` when the endpoint could not be asked.
        """
        try:
            response = await self._client.post(
                self.endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self.credentials,
                headers={"Accept": "application/json"},
            )
            response.raise_for_status()
            answer = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("token introspection at %s failed: %s", self.endpoint, exc)
            raise TokenRejectedError("the token could not be checked (introspection failed)", unavailable=True) from exc
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise TokenRejectedError("the token is not active (expired, revoked or unknown to the issuer)")
        self._check(answer)
        return answer

    def _check(self, claims: dict[str, Any]) -> None:
        now = time.time()
        issuer = claims.get("iss", self.issuer)
        if issuer != self.issuer:
            raise TokenRejectedError(f"the token was issued by {issuer!r}, not by {self.issuer!r}")
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, int | float) and exp + self.leeway_s < now:
            raise TokenRejectedError("the token has expired")
        if isinstance(nbf, int | float) and nbf - self.leeway_s > now:
            raise TokenRejectedError("the token is not valid yet (nbf)")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if not set(audiences) & set(self.audiences):
            raise TokenRejectedError(
                f"the token's audience {audiences} is not this resource {self.audiences}: "
                "ask the authorization server for a token with resource=" + self.audiences[0]
            )
