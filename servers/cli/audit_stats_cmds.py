"""``dataproducts audit --stats``: calls per principal, product, tool and outcome over a window.

The counting is one ``GROUP BY`` in the registry's database (:mod:`catalog.audit_stats`); this module
only renders it, as a rich table or (``--json``) one JSON document.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from catalog.audit import AuditLog, Outcome
from catalog.audit_stats import AuditStat, audit_stats
from catalog.registry import Registry
from servers.cli._common import console

__all__ = ["DEFAULT_WINDOW", "show_audit_stats"]

#: The window of ``--stats`` without ``--since``.
DEFAULT_WINDOW = "24h"


def show_audit_stats(
    registry: Registry,
    *,
    window: str,
    span: timedelta,
    principal: str | None,
    tool: str | None,
    product: str | None,
    outcome: Outcome | None,
    as_json: bool,
) -> None:
    """Print the statistics of the last ``span`` (spelt ``window``) of the audit log in ``registry``."""
    until = datetime.now(UTC)
    since = until - span
    stats = audit_stats(
        AuditLog.from_registry(registry),
        since=since,
        until=until,
        principal=principal,
        tool=tool,
        product=product,
        outcome=outcome,
    )
    if as_json:
        document = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "calls": sum(s.calls for s in stats),
            "groups": [s.model_dump(mode="json") for s in stats],
        }
        typer.echo(json.dumps(document, ensure_ascii=False))
        return
    console.print(_table(stats, f"calls in the last {window} (until {until:%Y-%m-%d %H:%M:%S} UTC)"))


def _table(stats: list[AuditStat], title: str) -> Table:
    table = Table(
        "principal", "product", "tool", "outcome", "calls", "rows", "avg ms", "max ms", "last (UTC)", title=title
    )
    for s in stats:
        table.add_row(
            s.principal,
            s.product or "",
            s.tool,
            s.outcome,
            str(s.calls),
            str(s.rows),
            f"{s.avg_ms:.1f}",
            f"{s.max_ms:.1f}",
            f"{s.last:%Y-%m-%d %H:%M:%S}",
        )
    if not stats:
        table.caption = "no calls in this window"
    else:
        table.caption = f"{sum(s.calls for s in stats)} calls in {len(stats)} groups"
    return table
