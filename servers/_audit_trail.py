"""One audit row per request, whichever layer ends it.

Three layers can end a request: the HTTP middleware (401, a session of another principal, a request
the transport refuses), the MCP server (unknown tool, invalid arguments, a crash outside the service)
and the service's use cases (everything that reaches them). The innermost layer that ends a request
writes its row with :func:`write_audit`; each outer layer opens an :func:`audit_scope` and writes a row
only when its scope ends with none. Scopes nest: a row written inside an inner scope counts for the
outer ones too.

A use case whose last step runs in a worker thread (the store's statement) can commit its row there
too, with :meth:`CallStats.committing`: the row then commits in that thread when no batch is being
written (leader/follower group commit, :meth:`catalog.audit.AuditLog.lead`), and the call crosses to a
thread and back once instead of twice. The guarantees are the same: one row per call, and no call
returns before its row has committed.

The scope lives in a context variable. The MCP SDK runs a message's handler in a copy of the context
of the HTTP request that carried it (that is how the authenticated principal reaches the tools), so
the handler's rows land in the HTTP request's scope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from catalog.audit import AuditLog, AuditRecord, Outcome, digest_args
from catalog.errors import AccessDeniedError, DataProductsError, InsufficientScopeError
from catalog.principal import Principal
from servers._call_facts import note_audit_failure
from servers.prometheus_metrics import observe_audit, observe_audit_failure

__all__ = ["ANONYMOUS", "CallStats", "audit_scope", "audited_call", "refusal", "write_audit"]

T = TypeVar("T")
A = TypeVar("A")

#: The principal of a refused request that carried no valid credential.
ANONYMOUS = "anonymous"

_written: ContextVar[list[AuditRecord] | None] = ContextVar("dataproducts_audit_written", default=None)


@contextmanager
def audit_scope() -> Iterator[list[AuditRecord]]:
    """Collect the audit rows written until the block ends (an empty list: nobody audited it yet)."""
    parent = _written.get()
    rows: list[AuditRecord] = []
    token = _written.set(rows)
    try:
        yield rows
    finally:
        _written.reset(token)
        if parent is not None:
            parent.extend(rows)


async def write_audit(log: AuditLog, record: AuditRecord) -> None:
    """Write ``record`` (group-committed with concurrent calls' rows) and count it for the open scopes
    and in the Prometheus metrics (:func:`~servers.prometheus_metrics.observe_audit`).

    Returns once the row has committed. The wait is shielded: a cancelled caller still waits for its
    row, as it would for a write in progress. On asyncio the wait holds no worker thread, so the rows
    of many concurrent calls do not queue for the thread pool.

    Raises:
        AuditError: the row could not be written; the caller must refuse the request (fail closed).
    """
    submitted = time.perf_counter()
    await _committed(log.submit(record), record, submitted)


async def _committed(committed: Future[None], record: AuditRecord, submitted: float) -> None:
    """Wait (shielded) until ``record``'s commit, handed over at ``submitted`` (a :func:`time.perf_counter`
    reading), has ended; raise its error, else count it in the metrics and for the open scopes."""
    try:
        if committed.done():  # written in the call's own thread: nothing to wait for
            committed.result()
        else:
            with anyio.CancelScope(shield=True):
                if _on_asyncio():
                    await asyncio.wrap_future(committed)
                else:
                    await anyio.to_thread.run_sync(committed.result)
    except BaseException as exc:
        code = exc.code if isinstance(exc, DataProductsError) else "audit_failed"
        observe_audit_failure(code)
        note_audit_failure(record, code)
        raise
    observe_audit(record, time.perf_counter() - submitted)
    rows = _written.get()
    if rows is not None:
        rows.append(record)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def refusal(
    principal: str,
    tool: str,
    args: Mapping[str, Any],
    *,
    code: str,
    outcome: Outcome,
    started: float,
) -> AuditRecord:
    """The row of a request refused before any use case ran (no statement, no rows).

    ``tool`` and a ``product`` argument are kept as asked (clipped to their columns); ``started`` is a
    :func:`time.perf_counter` reading taken when the request arrived.
    """
    product = args.get("product")
    return AuditRecord(
        principal=principal,
        tool=tool or "?",
        product=product if isinstance(product, str) and product else None,
        args_digest=digest_args(args),
        latency_ms=max(time.perf_counter() - started, 0.0) * 1000,
        outcome=outcome,
        error_code=code,
    )


class CallStats:
    """What a use case reports back to its audit row.

    ``objects`` lists the physical objects (tables, views) the statements of the call touched, as the
    plan or the store's authorizer reports them; it stays empty when no statement ran.
    """

    def __init__(self) -> None:
        self.product: str | None = None
        self.rows = 0
        self.bytes = 0
        self.objects: list[str] = []
        self._lead: Callable[[], tuple[Future[None], AuditRecord, float]] | None = None  # set by audited_call
        self._led: tuple[Future[None], AuditRecord, float] | None = None

    def committing(self, finish: Callable[[A], T]) -> Callable[[A], T]:
        """``finish``, then this call's audit row committed in the same worker thread: the body's last step.

        Give the returned function to something that runs it off the event loop (e.g.
        :meth:`connectors.base.Connector.execute_then`) and return its result at once: the row says
        ``ok`` with the stats as ``finish`` left them. If ``finish`` raises, no row is written there and
        the call is audited as it fails. The row commits in this thread when no batch is being written,
        else it is queued for the next group commit; either way :func:`audited_call` returns only once
        it has committed. Outside :func:`audited_call` it is ``finish`` alone.
        """

        def run(arg: A) -> T:
            result = finish(arg)
            if self._lead is not None and self._led is None:
                self._led = self._lead()
            return result

        return run


#: Use cases audited under another name than the tool whose ``auth.tool_scopes`` govern them: a
#: resource read returns what ``describe_product`` does, a resource listing what product search lists.
_SCOPED_AS = {"read_resource": "describe_product", "list_resources": "search_products"}


def _require_tool_scopes(principal: Principal, tool: str) -> None:
    """Refuse a use case whose tool needs a scope the principal's access token lacks, whatever the entry
    point (an MCP tool call, a resource read, a catalog page view): the HTTP check covers tool calls only.

    Raises:
        InsufficientScopeError: a scope of ``auth.tool_scopes`` is missing.
    """
    scoped = _SCOPED_AS.get(tool, tool)
    missing = principal.missing_tool_scopes(scoped)
    if missing:
        raise InsufficientScopeError(
            f"{scoped} needs scope(s) {' '.join(missing)} that the access token lacks; "
            f"sign in again asking for scope={' '.join(missing)!r}",
            reason=f"the access token lacks scope(s) {' '.join(missing)}",
        )


async def audited_call(
    log: AuditLog,
    principal: Principal,
    tool: str,
    args: Mapping[str, Any],
    body: Callable[[CallStats], Awaitable[T]],
) -> T:
    """Run one use case and write its one audit row, whether it answers, refuses or crashes.

    ``body`` fills the :class:`CallStats` it is given. Its error is raised again once the row is
    written; if the row cannot be written the call fails with the audit error instead (fail closed:
    nothing unaudited is served).
    """
    stats = CallStats()
    started = time.perf_counter()

    def row(outcome: Outcome, code: str | None) -> AuditRecord:
        return AuditRecord(
            principal=principal.name,
            tool=tool,
            product=stats.product,
            args_digest=digest_args(args),
            rows=stats.rows,
            bytes=stats.bytes,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome=outcome,
            error_code=code,
            objects=sorted(set(stats.objects)) or None,
        )

    def lead() -> tuple[Future[None], AuditRecord, float]:
        record = row("ok", None)
        submitted = time.perf_counter()
        return log.lead(record), record, submitted

    stats._lead = lead
    outcome: Outcome = "ok"
    code: str | None = None
    failure: Exception | None = None
    try:
        _require_tool_scopes(principal, tool)
        result = await body(stats)
    except DataProductsError as exc:
        outcome = "denied" if isinstance(exc, AccessDeniedError) else "error"
        code, failure = exc.code, exc
    except Exception as exc:  # an unexpected bug still leaves its audit row
        outcome, code, failure = "error", "internal_error", exc
    if stats._led is not None:  # the row was handed to the store's thread: it is the call's one row
        await _committed(*stats._led)  # raises AuditError: fail closed
    else:
        await write_audit(log, row(outcome, code))  # raises AuditError: fail closed
    if failure is not None:
        raise failure
    return result
