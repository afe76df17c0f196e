"""A real OAuth issuer on loopback for the tests: generated keys, signed JWTs, a JWKS and introspection.

The issuer serves its public keys at ``/jwks`` (counting the fetches) and an RFC 7662 endpoint at
``/introspect`` that requires its client's credentials (HTTP Basic). Keys can be added (rotation) while
it runs; opaque tokens are registered with the claims introspection answers for them.

For people it runs the authorization-code flow with PKCE: its metadata at
``{issuer}/.well-known/openid-configuration``, ``/authorize`` approving ``user_claims`` at once (no
login screen: the test user is signed in) and ``/token`` exchanging a code once, for the client that
asked for it, with the right redirect URI and PKCE verifier, for an access token whose audience is the
``resource`` asked for (RFC 8707); the page's client authenticates with its secret (HTTP Basic) or,
with ``public_page_client``, names itself. It records each authorization request and token exchange.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "dataproducts-rs"
CLIENT_SECRET = "s3cret-of-the-resource-server"
PAGE_CLIENT_ID = "dataproducts-catalog"
PAGE_CLIENT_SECRET = "s3cret-of-the-catalog-page"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[int]:
    """Run an ASGI app with uvicorn on a loopback port (default: a free one) in a thread; yields the port."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}


def new_key(alg: str = "RS256") -> SigningKey:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg.startswith(("RS", "PS"))
        else ec.generate_private_key(ec.SECP256R1())
    )
    return SigningKey(kid=secrets.token_hex(4), alg=alg, private=private)


@dataclass
class Issuer:
    """The issuer's state; ``url`` is set once it serves."""

    keys: list[SigningKey] = field(default_factory=lambda: [new_key("RS256")])
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    jwks_fetches: int = 0
    introspections: int = 0
    user_claims: dict[str, Any] = field(default_factory=dict)  # whom /authorize signs in
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> its authorization request
    authorizations: list[dict[str, str]] = field(default_factory=list)
    exchanges: list[dict[str, str]] = field(default_factory=list)
    public_page_client: bool = False  # the page's client may then name itself without a secret

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/data"

    def token(self, key: SigningKey | None = None, *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A JWT signed with ``key`` (default: the first key); ``claims`` override sensible defaults."""
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "nbf": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})})

    def opaque_token(self, **claims: Any) -> str:
        token = secrets.token_urlsafe(24)
        now = int(time.time())
        self.opaque[token] = {"active": True, "iss": self.issuer, "exp": now + 300, **claims}
        return token

    def app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            self.jwks_fetches += 1
            return JSONResponse({"keys": [k.public_jwk for k in self.keys]})

        async def introspect(request: Request) -> Response:
            self.introspections += 1
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = await request.form()
            claims = self.opaque.get(str(form.get("token")))
            return JSONResponse(claims if claims is not None else {"active": False})

        async def metadata(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.url}/authorize",
                    "token_endpoint": f"{self.url}/token",
                    "jwks_uri": f"{self.url}/jwks",
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                }
            )

        async def authorize(request: Request) -> Response:
            params = dict(request.query_params)
            self.authorizations.append(params)
            redirect = params.get("redirect_uri", "")
            if params.get("client_id") != PAGE_CLIENT_ID or not redirect:
                return JSONResponse({"error": "invalid_client"}, status_code=400)
            back = {"state": params.get("state", "")}
            if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256":
                back["error"] = "invalid_request"
            else:
                code = secrets.token_urlsafe(16)
                self.codes[code] = params
                back["code"] = code
            return RedirectResponse(f"{redirect}?{urlencode(back)}", status_code=302)

        async def token(request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            self.exchanges.append(form)
            expected = "Basic " + base64.b64encode(f"{PAGE_CLIENT_ID}:{PAGE_CLIENT_SECRET}".encode()).decode()
            public = self.public_page_client and "authorization" not in request.headers
            if (
                not (public and form.get("client_id") == PAGE_CLIENT_ID)
                and request.headers.get("authorization") != expected
            ):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            asked = self.codes.pop(form.get("code", ""), None)  # a code is good once
            if asked is None or form.get("grant_type") != "authorization_code":
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            verifier = form.get("code_verifier", "").encode("ascii")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if challenge != asked.get("code_challenge") or form.get("redirect_uri") != asked.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            resource = form.get("resource") or asked.get("resource")
            if resource is None:
                return JSONResponse({"error": "invalid_target"}, status_code=400)
            claims = {"aud": resource, "scope": asked.get("scope", ""), "azp": PAGE_CLIENT_ID, **self.user_claims}
            return JSONResponse({"access_token": self.token(**claims), "token_type": "Bearer", "expires_in": 300})

        return Starlette(
            routes=[
                Route("/jwks", jwks),
                Route("/introspect", introspect, methods=["POST"]),
                Route("/realms/data/.well-known/openid-configuration", metadata),
                Route("/authorize", authorize),
                Route("/token", token, methods=["POST"]),
            ]
        )


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    with serve(issuer.app()) as port:
        issuer.url = f"http://127.0.0.1:{port}"
        yield issuer
