"""A real OAuth issuer on loopback for the tests: generated keys, signed JWTs, a JWKS and introspection.

The issuer serves its public keys at ``/jwks`` (counting the fetches) and an RFC 7662 endpoint at
``/introspect`` that requires its client's credentials (HTTP Basic). Keys can be added (rotation) while
it runs; opaque tokens are registered with the claims introspection answers for them.
"""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT_ID = "dataproducts-rs"
CLIENT_SECRET = "s3cret-of-the-resource-server"


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

        return Starlette(routes=[Route("/jwks", jwks), Route("/introspect", introspect, methods=["POST"])])


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    with serve(issuer.app()) as port:
        issuer.url = f"http://127.0.0.1:{port}"
        yield issuer
