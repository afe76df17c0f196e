"""The MCP server's one audit and error boundary for tool calls and resource reads.

:class:`AuditedMCPServer` overrides ``MCPServer.call_tool`` and ``MCPServer.read_resource``, the two
places every tool call and resource read passes through after the SDK has parsed the request, and a
low-level middleware catches the requests the SDK refuses before that (malformed params). Each
request leaves exactly one audit row (see :mod:`servers._audit_trail`): the use case writes it when the
call reaches the service; otherwise the boundary writes one for the refusal — an unknown tool
(``unknown_tool``), arguments that fail the tool's schema (``invalid_arguments``), a caller that is
not authenticated (``unauthorized``), a crash (``internal_error``), a malformed request
(``invalid_params``), a protocol error raised inside (``protocol_error``).

Every failure reaches the client as one line starting with its code, e.g. ``not_found: no product
'shop.ordrs'; did you mean 'shop.orders'?``; a resource that does not exist, or a product the caller
may not read, answers the spec's resource-not-found error (-32602 since SEP-2164; the message keeps
``access_denied`` and the policy's reason). ``resources/list`` lists the products the caller may
read, a page at a time (:mod:`servers._resource_listing`), audited as ``list_resources``. An exception that is not a
:class:`~catalog.errors.DataProductsError` is a bug: the client reads ``internal_error: <type>``, the
traceback goes to the log, never to the client.

Outside that boundary, each tool call, resource read and listing runs in an OpenTelemetry span that
reports the call's audit row and the governance it got (see :mod:`servers.telemetry`).

Tools and the resource learn who is calling with :func:`caller`, and refuse arguments that pass the
schema but not the model built from them with :func:`refusing_invalid_arguments`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedToolError,
)
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    TextContent,
)
from mcp_types import Resource as MCPResource
from mcp_types import Tool as ListedTool
from opentelemetry.trace import Tracer
from pydantic import AnyUrl, ValidationError

from catalog.audit import Outcome
from catalog.errors import AccessDeniedError, AuditError, DataProductsError
from catalog.principal import Principal
from catalog.query import Limits
from servers._argument_errors import argument_problems as _argument_problems
from servers._argument_errors import format_problems, unknown_argument_problems
from servers._audit_trail import ANONYMOUS, audit_scope, refusal, write_audit
from servers._resource_listing import PAGE_SIZE
from servers._tool_listing import lean_tools
from servers.auth import current_principal
from servers.result_text import result_text
from servers.service import DataProductsService
from servers.telemetry import call_span, recording

__all__ = ["AuditedMCPServer", "Refused", "argument_problems", "caller", "refusing_invalid_arguments"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_AUDITED_METHODS = frozenset({"tools/call", "resources/read"})
_TRACED_METHODS = {"tools/call": "tools/call", "resources/read": "read_resource", "resources/list": "list_resources"}
_EXAMPLE_URI = "product://shop.orders"
_NOT_FOUND_CODES = frozenset({"not_found", "access_denied"})
_LISTED_DESCRIPTION = 300


class Refused(ToolError):
    """A request refused before the service layer, with the code its audit row and message carry."""

    def __init__(self, code: str, message: str, *, outcome: Outcome = "error") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.outcome = outcome


class AuditedMCPServer(MCPServer[DataProductsService]):
    """An MCPServer whose tool calls and resource reads each leave one audit row and fail in one line.

    ``principal`` is the caller of requests that carry no authenticated principal (stdio, in-process);
    None refuses them. The tools are listed lean (see :mod:`servers._tool_listing`), their descriptions
    stating ``limits``; a result's text content is its structured content, compact (see
    :mod:`servers.result_text`).
    """

    def __init__(
        self,
        *args: Any,
        principal: Principal | None = None,
        limits: Limits | None = None,
        tracer: Tracer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.default_principal = principal
        self.limits = limits or Limits()
        #: Products per ``resources/list`` page.
        self.resource_page_size = PAGE_SIZE
        #: The tracer of the calls' spans (see :mod:`servers.telemetry`); None: no spans.
        self.tracer = tracer
        self.middleware.append(self._trace_calls)
        self.middleware.append(self._audit_refused_requests)

    def caller(self) -> Principal:
        """Who is calling: the principal of the HTTP request, else the server's default.

        Raises:
            Refused: nobody is authenticated (``unauthorized``).
        """
        found = current_principal() or self.default_principal
        if found is None:
            raise Refused(
                "unauthorized",
                "not authenticated: send 'Authorization: Bearer <token>' with a configured token",
                outcome="denied",
            )
        return found

    async def list_tools(self) -> list[ListedTool]:
        return lean_tools(await super().list_tools(), self.limits)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[DataProductsService, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        started = time.perf_counter()
        tool = None
        with audit_scope() as written:
            try:
                tool = self._tool_manager.get_tool(name)
                if tool is None:  # the lookup the SDK makes next, answered here
                    known = ", ".join(sorted(tool.name for tool in await self.list_tools()))
                    raise Refused("unknown_tool", f"no tool {name[:100]!r}; the tools are {known}")
                taken = list(tool.parameters.get("properties", {}))
                if unknown := unknown_argument_problems(arguments, taken):  # the SDK would drop them silently
                    raise Refused("invalid_arguments", format_problems(unknown))
                return _lean(await super().call_tool(name, arguments, context))
            except MCPError:  # a protocol error the SDK answers as such
                if not written:
                    await self._audit_refusal(context, name, arguments, "protocol_error", "error", started, ToolError)
                raise
            except Exception as exc:
                schema = tool.parameters if tool is not None else None
                code, outcome, message = _failure(exc, f"tool {name[:100]!r}", schema)
                if not written and not _audit_failed(exc):  # a second row would wait on the same database
                    await self._audit_refusal(context, name, arguments, code, outcome, started, ToolError)
                raise ToolError(message) from exc

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[DataProductsService], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        """``resources/list``: one ``product://{name}`` per product the caller may read, paginated by cursor.

        Replaces the SDK's handler (which lists only fixed resources, and no product is one); the
        service audits the call. A bad cursor answers invalid params; any other failure one line.
        """
        service = ctx.lifespan_context
        try:
            page, after = await service.list_product_resources(
                self.caller(), params.cursor if params else None, page_size=self.resource_page_size
            )
        except Exception as exc:
            code, _, message = _failure(exc, "resources/list")
            raise MCPError(
                code=INVALID_PARAMS if code == "invalid_request" else INTERNAL_ERROR, message=message
            ) from exc
        resources = [
            MCPResource(
                uri=f"product://{c.name}",
                name=c.name,
                title=c.title,
                description=_one_line(c.description)[:_LISTED_DESCRIPTION] or None,
                mime_type="application/json",
            )
            for c in page
        ]
        return ListResourcesResult(resources=resources, next_cursor=after)

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[DataProductsService, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        started = time.perf_counter()
        with audit_scope() as written:
            try:
                return await super().read_resource(uri, context)
            except MCPError:
                if not written:
                    args = {"uri": str(uri)}
                    await self._audit_refusal(
                        context, "read_resource", args, "protocol_error", "error", started, ResourceError
                    )
                raise
            except Exception as exc:
                code, outcome, message = _resource_failure(exc, str(uri))
                if not written and not _audit_failed(exc):
                    args = {"uri": str(uri)}
                    await self._audit_refusal(context, "read_resource", args, code, outcome, started, ResourceError)
                # a product missing or not granted is a resource this caller cannot have: the spec's not-found error
                raise (ResourceNotFoundError if code in _NOT_FOUND_CODES else ResourceError)(message) from exc

    async def _audit_refusal(
        self,
        context: Context[DataProductsService, Any] | None,
        tool: str,
        args: Mapping[str, Any],
        code: str,
        outcome: Outcome,
        started: float,
        error: type[Exception],
    ) -> None:
        """Write the row of a request no use case audited; raise ``error`` (fail closed) if it cannot be written."""
        try:
            service = context.request_context.lifespan_context if context is not None else None
        except ValueError:  # called outside a request (direct use of call_tool): nothing is served
            service = None
        if not isinstance(service, DataProductsService):
            return
        found = current_principal() or self.default_principal
        record = refusal(found.name if found else ANONYMOUS, tool, args, code=code, outcome=outcome, started=started)
        try:
            await write_audit(service.audit, record)
        except AuditError as exc:
            raise error(f"{exc.code}: {exc.message}") from exc

    async def _trace_calls(
        self, ctx: ServerRequestContext[DataProductsService, Any], call_next: CallNext
    ) -> HandlerResult:
        """Low-level middleware: a tool call, resource read or listing runs in its span (outside the audit
        boundary, so the span sees the call's audit row whichever layer writes it)."""
        method = _TRACED_METHODS.get(ctx.method)
        if method is None or self.tracer is None or not recording(self.tracer):
            return await call_next(ctx)
        if method == "tools/call":
            name = ctx.params.get("name") if isinstance(ctx.params, Mapping) else None
            method = name if isinstance(name, str) and self._tool_manager.get_tool(name) is not None else method
        with call_span(self.tracer, method):
            return await call_next(ctx)

    async def _audit_refused_requests(
        self, ctx: ServerRequestContext[DataProductsService, Any], call_next: CallNext
    ) -> HandlerResult:
        """Low-level middleware: a tool call or resource read the SDK refuses as malformed gets its row."""
        if ctx.method not in _AUDITED_METHODS:
            return await call_next(ctx)
        started = time.perf_counter()
        with audit_scope() as written:
            try:
                return await call_next(ctx)
            except Exception:
                params = ctx.params if isinstance(ctx.params, Mapping) else {}
                if not written and isinstance(ctx.lifespan_context, DataProductsService):
                    name = params.get("name") if ctx.method == "tools/call" else "read_resource"
                    found = current_principal() or self.default_principal
                    record = refusal(
                        found.name if found else ANONYMOUS,
                        name if isinstance(name, str) else ctx.method,
                        params,
                        code="invalid_params",
                        outcome="error",
                        started=started,
                    )
                    await write_audit(ctx.lifespan_context.audit, record)  # AuditError: the request fails
                raise


def _lean(result: CallToolResult | InputRequiredResult) -> CallToolResult | InputRequiredResult:
    """``result`` with its text content written from its structured content, compact."""
    if not isinstance(result, CallToolResult) or result.is_error or result.structured_content is None:
        return result
    return result.model_copy(
        update={"content": [TextContent(type="text", text=result_text(result.structured_content))]}
    )


def caller(ctx: Context[Any, Any]) -> Principal:
    """Who is calling the tool or resource that ``ctx`` serves: see :meth:`AuditedMCPServer.caller`.

    Raises:
        Refused: nobody is authenticated (``unauthorized``).
    """
    server = ctx.mcp_server
    if not isinstance(server, AuditedMCPServer):  # the audit boundary is what knows the caller
        raise TypeError(f"tools need an AuditedMCPServer, not {type(server).__name__}")
    return server.caller()


def refusing_invalid_arguments(build: Callable[P, T]) -> Callable[P, T]:
    """Decorate a function that builds a model from a tool's arguments: its ``ValidationError`` is the
    caller's mistake, refused as ``invalid_arguments`` saying where and what (see :func:`argument_problems`).

    Only the building step is decorated, not the tool: a ``ValidationError`` raised further on, in
    the service, is a bug and must read as ``internal_error``, not as the caller's mistake.
    """

    @functools.wraps(build)
    def refusing(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return build(*args, **kwargs)
        except ValidationError as exc:
            raise Refused("invalid_arguments", argument_problems(exc)) from exc

    return refusing


def _failure(exc: Exception, subject: str, schema: Mapping[str, Any] | None = None) -> tuple[str, Outcome, str]:
    """The audit code, outcome and one-line message of a failed tool call or resource read.

    ``exc`` is what the SDK raised: its wrappers (``ToolError``, ``ResourceError`` and their
    ``Unexpected*`` forms) keep the original as ``__cause__``.
    """
    origin: BaseException = exc
    while isinstance(origin, ToolError | ResourceError) and not isinstance(origin, Refused):
        if origin.__cause__ is None:
            break
        origin = origin.__cause__
    if isinstance(origin, Refused):
        if isinstance(origin.__cause__, ValidationError) and schema is not None:  # see refusing_invalid_arguments
            return origin.code, origin.outcome, f"{origin.code}: {argument_problems(origin.__cause__, schema)}"
        return origin.code, origin.outcome, str(origin)
    if isinstance(origin, DataProductsError):
        outcome: Outcome = "denied" if isinstance(origin, AccessDeniedError) else "error"
        return origin.code, outcome, f"{origin.code}: {_one_line(origin.message)}"
    if isinstance(origin, ValidationError) and not _is_crash(exc):
        return "invalid_arguments", "error", f"invalid_arguments: {argument_problems(origin, schema)}"
    if origin is exc and isinstance(exc, ToolError | ResourceError):  # raised by the SDK with no cause
        return "invalid_request", "error", f"invalid_request: {_one_line(str(exc))}"
    logger.error("%s failed unexpectedly", subject, exc_info=origin)
    return "internal_error", "error", f"internal_error: {type(origin).__name__} in {subject}; the server logged it"


def _resource_failure(exc: Exception, uri: str) -> tuple[str, Outcome, str]:
    if isinstance(exc, ResourceNotFoundError) and exc.__cause__ is None:  # no resource or template matches
        return "not_found", "error", f"not_found: no resource {uri[:200]!r}; read product://<name>, e.g. {_EXAMPLE_URI}"
    return _failure(exc, f"resource {uri[:200]!r}")


def _audit_failed(exc: BaseException) -> bool:
    """True when the call failed because its own audit row could not be written (fail closed): the
    refusal row would go to the same unavailable database, so the caller would wait for it twice."""
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, AuditError):
            return True
        link = link.__cause__
    return False


def _is_crash(exc: BaseException) -> bool:
    """True when the SDK marked the failure unexpected (e.g. a result that fails its output schema)."""
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, UnexpectedToolError):
            return True
        link = link.__cause__
    return False


def argument_problems(error: ValidationError, schema: Mapping[str, Any] | None = None) -> str:
    """The argument errors of ``error``, one line each, saying where and what would be valid (never the values).

    ``schema``, the tool's input schema, lets a message name the fields an object takes.
    """
    return format_problems(_argument_problems(error, schema))


def _one_line(text: str) -> str:
    return " ".join(text.split())
