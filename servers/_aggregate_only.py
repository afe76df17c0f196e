"""Warnings of reads over aggregate-only columns (see ``policy.aggregate_only``).

A row query without ``columns`` leaves aggregate-only columns out and says so; an aggregate query that
reads one suppresses groups under the minimum size, and a second small governed statement counts them
(before the query itself, so that the query's rows can become the result in the thread that read them).
"""

from __future__ import annotations

from collections.abc import Iterable

from catalog.compile import CompiledQuery
from catalog.policy import GovernedView
from catalog.query import Query
from connectors.base import Connector
from servers.results import QueryResult

__all__ = ["aggregate_only_warnings", "sql_aggregate_only_warning", "suppressed_groups"]


def sql_aggregate_only_warning(views: Iterable[GovernedView], result: QueryResult) -> None:
    """``run_sql`` does not count suppressed groups: say that they are suppressed."""
    for view in views:
        for column, size in sorted(view.aggregate_only.items()):
            result.warnings.append(
                f"{view.name}.{column} is aggregate-only for you: groups under {size} rows are suppressed "
                "(not counted on this path)"
            )


async def suppressed_groups(compiled: CompiledQuery, connector: Connector) -> int:
    """How many groups an aggregate query over aggregate-only columns suppressed (a second small
    governed statement counts them); 0 when it suppresses none."""
    if compiled.suppressed is None or compiled.min_group_size is None:
        return 0
    counted = await connector.execute(compiled.suppressed)
    return int(counted.rows[0][0]) if counted.rows else 0


def aggregate_only_warnings(
    view: GovernedView, query: Query, compiled: CompiledQuery, result: QueryResult, small: int = 0
) -> None:
    """Say which aggregate-only columns a row query left out, and how many (``small``, counted by
    :func:`suppressed_groups`) small groups were suppressed."""
    if not view.aggregate_only:
        return
    if not query.is_aggregate and not query.columns:
        left_out = ", ".join(c for c in view.columns if c in view.aggregate_only)
        result.warnings.append(
            f"{left_out} left out: aggregate-only for you; aggregate with group_by to read them "
            "(groups under the minimum size are suppressed)"
        )
    if small and compiled.min_group_size is not None:
        read = ", ".join(compiled.aggregate_only_read)
        groups = "1 group" if small == 1 else f"{small} groups"
        result.warnings.append(
            f"{groups} with fewer than {compiled.min_group_size} rows {'was' if small == 1 else 'were'} "
            f"suppressed ({read} is aggregate-only)"
        )
