"""Who is asking: a principal with roles. Resolved at the edge (bearer token, stdio config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Principal"]


class Principal(BaseModel):
    """An authenticated caller. Policy subjects match it as ``*``, ``principal:<name>`` or ``role:<role>``."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    roles: frozenset[str] = frozenset()

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset({"*", f"principal:{self.name}", *(f"role:{r}" for r in self.roles)})

    def matches(self, subject: str | list[str]) -> bool:
        """True when any of the given policy subjects names this principal."""
        wanted = [subject] if isinstance(subject, str) else subject
        return any(s in self.subjects for s in wanted)
