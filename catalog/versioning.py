"""What changed between two versions of a contract, and which version number such a change needs.

Breaking changes (a column removed, renamed — seen as removed plus added — or retyped, or the primary
key changed) need a MAJOR bump; any other change needs at least a minor or patch bump. Identity is
the canonical content hash: equal hashes mean nothing changed.

A diff knows only the two contracts; the registry adds the downstream products a breaking change
reaches (``affected_downstream``, from :mod:`catalog.lineage`), and :meth:`ContractDiff.render` lists them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from catalog._model import FrozenModel
from catalog.contract import ProductContract
from catalog.lineage import DownstreamImpact, render_impact

__all__ = [
    "ColumnChange",
    "ContractDiff",
    "FieldChange",
    "canonical_json",
    "content_hash",
    "diff_contracts",
    "parse_semver",
    "version_refusal",
]

# Fields compared one by one with their own rules; everything else is an "other" top-level change.
_STRUCTURED = {"name", "version", "columns", "primary_key", "metrics", "policy"}


def canonical_json(contract: ProductContract) -> str:
    """The contract as canonical JSON: every field, sorted keys, no whitespace."""
    return json.dumps(contract.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(contract: ProductContract) -> str:
    """sha256 (hex) of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(contract).encode("utf-8")).hexdigest()


def parse_semver(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` → ``(1, 2, 3)``.

    Raises:
        ValueError: not MAJOR.MINOR.PATCH.
    """
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {version!r}; use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return int(parts[0]), int(parts[1]), int(parts[2])


class ColumnChange(FrozenModel):
    column: str
    field: str  # type, description, unit, pii, nullable
    old: Any = None
    new: Any = None


class FieldChange(FrozenModel):
    path: str  # e.g. "owner.email", "sla"
    old: Any = None
    new: Any = None


class ContractDiff(FrozenModel):
    """Differences from ``from_version`` to ``to_version`` of one product."""

    name: str
    from_version: str
    to_version: str
    columns_added: list[str] = Field(default_factory=list)
    columns_removed: list[str] = Field(default_factory=list)
    columns_retyped: list[ColumnChange] = Field(default_factory=list)
    column_changes: list[ColumnChange] = Field(default_factory=list)
    columns_reordered: bool = False
    primary_key_before: list[str] = Field(default_factory=list)
    primary_key_after: list[str] = Field(default_factory=list)
    metrics_added: list[str] = Field(default_factory=list)
    metrics_removed: list[str] = Field(default_factory=list)
    metrics_changed: list[str] = Field(default_factory=list)
    policy_changes: list[str] = Field(default_factory=list)
    field_changes: list[FieldChange] = Field(default_factory=list)
    affected_downstream: list[DownstreamImpact] = Field(default_factory=list)

    @property
    def primary_key_changed(self) -> bool:
        return self.primary_key_before != self.primary_key_after

    @property
    def breaking_reasons(self) -> list[str]:
        """One sentence per breaking change, naming the columns."""
        reasons = [f"column {c!r} removed" for c in self.columns_removed]
        reasons += [f"column {c.column!r} retyped {c.old} → {c.new}" for c in self.columns_retyped]
        if self.primary_key_changed:
            reasons.append(f"primary key changed {self.primary_key_before} → {self.primary_key_after}")
        if self.columns_removed and self.columns_added:
            reasons.append(
                f"(a rename shows as removed {self.columns_removed} plus added {self.columns_added}; "
                "renames break readers)"
            )
        return reasons

    @property
    def breaking(self) -> bool:
        return bool(self.columns_removed or self.columns_retyped or self.primary_key_changed)

    @property
    def is_empty(self) -> bool:
        return not self.changes()

    def changes(self) -> list[str]:
        """Every change as one human-readable line, breaking ones first."""
        lines = [f"column {c!r} removed" for c in self.columns_removed]
        lines += [f"column {c.column!r} retyped: {c.old} → {c.new}" for c in self.columns_retyped]
        if self.primary_key_changed:
            lines.append(f"primary key: {self.primary_key_before} → {self.primary_key_after}")
        lines += [f"column {c!r} added" for c in self.columns_added]
        lines += [f"column {c.column!r} {c.field}: {_show(c.old)} → {_show(c.new)}" for c in self.column_changes]
        if self.columns_reordered:
            lines.append("columns reordered")
        lines += [f"metric {m!r} added" for m in self.metrics_added]
        lines += [f"metric {m!r} removed" for m in self.metrics_removed]
        lines += [f"metric {m!r} changed" for m in self.metrics_changed]
        lines += [f"policy: {p}" for p in self.policy_changes]
        lines += [f"{f.path}: {_show(f.old)} → {_show(f.new)}" for f in self.field_changes]
        return lines

    def summary(self) -> str:
        """A one-line summary for history listings."""
        changes = self.changes()
        if not changes:
            return "no content change"
        head = "; ".join(changes[:4])
        return head + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")

    def render(self) -> str:
        """A readable multi-line report: header, breaking flag, one change per line."""
        header = f"{self.name} {self.from_version} → {self.to_version}"
        if self.is_empty:
            return f"{header}: no changes"
        flag = "BREAKING (needs a major version)" if self.breaking else "compatible"
        lines = [f"{header}: {flag}", *(f"  - {line}" for line in self.changes())]
        if self.affected_downstream:
            lines.append("  affects downstream:")
            lines += [f"    - {line}" for line in render_impact(self.affected_downstream)]
        return "\n".join(lines)

    @property
    def breaking_columns(self) -> list[str] | None:
        """The columns a breaking change touches (removed, retyped); None: the whole product (primary key)."""
        if self.primary_key_changed:
            return None
        return [*self.columns_removed, *(c.column for c in self.columns_retyped)]


def diff_contracts(old: ProductContract, new: ProductContract) -> ContractDiff:
    """The differences from ``old`` to ``new`` (normally two versions of one product)."""
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    retyped: list[ColumnChange] = []
    changed: list[ColumnChange] = []
    for name in (n for n in old.column_names if n in new_cols):
        before, after = old_cols[name], new_cols[name]
        if before.type != after.type:
            retyped.append(ColumnChange(column=name, field="type", old=before.type, new=after.type))
        changed += [
            ColumnChange(column=name, field=attr, old=getattr(before, attr), new=getattr(after, attr))
            for attr in ("description", "unit", "pii", "nullable")
            if getattr(before, attr) != getattr(after, attr)
        ]
    kept_old = [n for n in old.column_names if n in new_cols]
    kept_new = [n for n in new.column_names if n in old_cols]

    old_metrics = {m.name: m for m in old.metrics}
    new_metrics = {m.name: m for m in new.metrics}
    return ContractDiff(
        name=new.name,
        from_version=old.version,
        to_version=new.version,
        columns_added=[n for n in new.column_names if n not in old_cols],
        columns_removed=[n for n in old.column_names if n not in new_cols],
        columns_retyped=retyped,
        column_changes=changed,
        columns_reordered=kept_old != kept_new,
        primary_key_before=list(old.primary_key),
        primary_key_after=list(new.primary_key),
        metrics_added=[n for n in new_metrics if n not in old_metrics],
        metrics_removed=[n for n in old_metrics if n not in new_metrics],
        metrics_changed=[n for n in new_metrics if n in old_metrics and new_metrics[n] != old_metrics[n]],
        policy_changes=_policy_changes(old, new),
        field_changes=_field_changes(old, new),
    )


def version_refusal(latest: str, candidate: str, diff: ContractDiff) -> str | None:
    """Why ``candidate`` may not follow ``latest`` given ``diff`` (None when it may).

    ``diff`` must be non-empty (the content changed).
    """
    if parse_semver(candidate) == parse_semver(latest):
        return (
            f"{diff.name} {candidate} is already registered with different content; "
            f"bump the version (e.g. {_bump(latest, breaking=diff.breaking)}) to register the change"
        )
    if parse_semver(candidate) < parse_semver(latest):
        return f"version {candidate} is lower than the latest registered version {latest} of {diff.name}"
    if diff.breaking and parse_semver(candidate)[0] <= parse_semver(latest)[0]:
        required = _bump(latest, breaking=True)
        affected = ""
        if diff.affected_downstream:
            affected = f"; it affects downstream {'; '.join(render_impact(diff.affected_downstream))}"
        return (
            f"{diff.name} {candidate} makes a breaking change ({'; '.join(diff.breaking_reasons)}), "
            f"which needs a major version bump: register it as {required}, or keep the columns compatible"
            f"{affected}"
        )
    return None


def _bump(version: str, *, breaking: bool) -> str:
    major, minor, _ = parse_semver(version)
    return f"{major + 1}.0.0" if breaking else f"{major}.{minor + 1}.0"


def _policy_changes(old: ProductContract, new: ProductContract) -> list[str]:
    before, after = old.policy, new.policy
    lines = [f"access granted to {s}" for s in after.access if s not in before.access]
    lines += [f"access withdrawn from {s}" for s in before.access if s not in after.access]
    old_filters = [(f.when, f.where) for f in before.row_filters]
    new_filters = [(f.when, f.where) for f in after.row_filters]
    lines += [f"row filter added for {w}: {sql}" for w, sql in new_filters if (w, sql) not in old_filters]
    lines += [f"row filter removed for {w}: {sql}" for w, sql in old_filters if (w, sql) not in new_filters]
    lines += [f"masking added: {', '.join(m.columns)} ({m.method})" for m in after.masking if m not in before.masking]
    lines += [f"masking removed: {', '.join(m.columns)} ({m.method})" for m in before.masking if m not in after.masking]
    return lines


def _field_changes(old: ProductContract, new: ProductContract) -> list[FieldChange]:
    before = old.model_dump(mode="json")
    after = new.model_dump(mode="json")
    changes: list[FieldChange] = []
    for key in (k for k in ProductContract.model_fields if k not in _STRUCTURED):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changes += [
                FieldChange(path=f"{key}.{sub}", old=a.get(sub), new=b.get(sub))
                for sub in dict.fromkeys([*a, *b])
                if a.get(sub) != b.get(sub)
            ]
        else:
            changes.append(FieldChange(path=key, old=a, new=b))
    return changes


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
