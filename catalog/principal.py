"""Who is asking: a principal with roles. Resolved at the edge (bearer token, stdio config, OAuth token)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Principal"]


class Principal(BaseModel):
    """An authenticated caller. Policy subjects match it as ``*``, ``principal:<name>`` or ``role:<role>``.

    A principal authenticated by an OAuth access token also carries the token's ``scopes`` and the
    scopes each product needs (``product_scopes``: product name or glob -> scopes); a product whose
    scopes the token lacks is not readable, whatever the policy says. Without a token (``scopes`` is
    None) no scope applies.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] | None = None
    product_scopes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    tool_scopes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset({"*", f"principal:{self.name}", *(f"role:{r}" for r in self.roles)})

    def matches(self, subject: str | list[str]) -> bool:
        """True when any of the given policy subjects names this principal."""
        wanted = [subject] if isinstance(subject, str) else subject
        return any(s in self.subjects for s in wanted)

    def missing_tool_scopes(self, tool: str) -> list[str]:
        """The scopes calling ``tool`` needs that this principal's token does not carry (sorted)."""
        if self.scopes is None:
            return []
        needed = {s for name, scopes in self.tool_scopes if name == tool for s in scopes}
        return sorted(needed - self.scopes)

    def missing_scopes(self, product: str) -> list[str]:
        """The scopes reading ``product`` needs that this principal's token does not carry (sorted)."""
        if self.scopes is None:
            return []
        needed = {s for pattern, scopes in self.product_scopes if fnmatchcase(product, pattern) for s in scopes}
        return sorted(needed - self.scopes)
