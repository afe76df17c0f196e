"""An issuer's signing keys: its JWKS fetched over HTTP(S) and cached, or a local JWKS / PEM file.

A fetched key set is reused for ``jwks_cache_s``. A token signed with a key id the cache does not know
refetches the set (the issuer rotated its keys), at most once per ``jwks_refetch_s``, so a flood of
tokens with made-up key ids costs the issuer one request per interval, not one per token. Concurrent
requests share one fetch. When a refetch fails the keys already known stay in use.

Symmetric keys (``kty: oct``) and encryption keys (``use: enc``) are ignored: a resource server checks
signatures with public keys only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWTError

from catalog.errors import ConfigError

__all__ = ["FileKeys", "KeyLookupError", "RemoteJWKS", "SigningKey"]

logger = logging.getLogger(__name__)


class KeyLookupError(Exception):
    """No key checks this token; ``unavailable`` when the issuer's key set could not be fetched at all."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class SigningKey:
    """A public key and the one algorithm its JWK pins, if it pins one."""

    key: Any
    algorithm: str | None


def _parse_jwks(data: Any, where: str) -> dict[str | None, SigningKey]:
    """Key id -> key of the usable signature keys of a JWKS document."""
    members = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(members, list):
        raise ValueError(f"{where}: not a JWKS (expected a JSON object with a 'keys' list)")
    keys: dict[str | None, SigningKey] = {}
    for member in members:
        if not isinstance(member, dict) or member.get("kty") == "oct" or member.get("use", "sig") != "sig":
            continue
        try:
            jwk = PyJWK(member)
        except PyJWTError:
            continue  # a key type this server cannot use (another issuer's concern)
        keys[member.get("kid")] = SigningKey(jwk.key, member.get("alg"))
    if not keys:
        raise ValueError(f"{where}: the JWKS holds no usable public signature key")
    return keys


def _pick(keys: dict[str | None, SigningKey], kid: str | None, where: str) -> SigningKey | None:
    if kid is not None:
        return keys.get(kid) or keys.get(None)
    if len(keys) == 1:
        return next(iter(keys.values()))
    raise KeyLookupError(f"the token names no key id (kid) and {where} holds {len(keys)} keys")


class FileKeys:
    """Keys read once from a local file: a JWKS (JSON) or a PEM public key (air-gapped sites)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"auth: cannot read the key file {path}: {exc.strerror or exc}") from exc
        try:
            if raw.lstrip().startswith(b"-----BEGIN"):
                self._keys: dict[str | None, SigningKey] = {None: SigningKey(load_pem_public_key(raw), None)}
            else:
                self._keys = _parse_jwks(json.loads(raw), str(path))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"auth: the key file {path} is neither a JWKS (JSON) nor a PEM public key: {exc}"
            ) from exc

    async def key_for(self, kid: str | None) -> SigningKey:
        """Raises KeyLookupError: no key of the file has that id."""
        key = _pick(self._keys, kid, str(self.path))
        if key is None:
            raise KeyLookupError(f"no key with id {kid!r} in the key file {self.path}")
        return key


class RemoteJWKS:
    """An issuer's JWKS fetched from ``url``, cached and refetched as the module docstring says."""

    def __init__(self, url: str, *, cache_s: float, refetch_s: float, timeout_s: float) -> None:
        self.url = url
        self.cache_s = cache_s
        self.refetch_s = refetch_s
        self.timeout_s = timeout_s
        self.fetches = 0
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._lock = anyio.Lock()

    async def key_for(self, kid: str | None) -> SigningKey:
        """Raises KeyLookupError: the key set has no such key, or could not be fetched (``unavailable``)."""
        now = time.monotonic()
        wanted = now - self._fetched_at > self.cache_s or kid not in self._keys
        if wanted and now - self._tried_at >= self.refetch_s:
            await self._refresh(now)
        if not self._keys:
            raise KeyLookupError(f"the issuer's keys could not be fetched from {self.url}", unavailable=True)
        key = _pick(self._keys, kid, self.url)
        if key is None:
            raise KeyLookupError(f"no key with id {kid!r} in the issuer's key set at {self.url}")
        return key

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._tried_at >= asked_at:  # another request fetched while this one waited
                return
            self._tried_at = time.monotonic()
            try:
                async with httpx2.AsyncClient(timeout=self.timeout_s) as client:
                    response = await client.get(self.url, headers={"Accept": "application/json"})
                    response.raise_for_status()
                    keys = _parse_jwks(response.json(), self.url)
            except (httpx2.HTTPError, ValueError) as exc:
                logger.warning("could not fetch the JWKS at %s: %s", self.url, exc)
                return
            self.fetches += 1
            self._keys = keys
            self._fetched_at = time.monotonic()
