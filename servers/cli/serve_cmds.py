"""Serving commands: serve, demo, audit, token."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from catalog.audit import AuditLog, Outcome
from catalog.contract import parse_duration
from catalog.errors import EmbeddingError
from catalog.loader import load_contract_file
from catalog.registry import Registry
from embeddings.models import resolve_model
from servers.cli._common import console, err_console, reporting_errors, state
from servers.cli.audit_stats_cmds import DEFAULT_WINDOW, show_audit_stats
from servers.cli.metrics_notice import metrics_notice
from servers.cli.quality_cmds import check_workspace
from servers.cli.retrieval_cmds import index_workspace, print_reports
from servers.demo import build_demo_workspace
from servers.http import serve_http
from servers.mcp import create_server
from servers.settings import Settings, hash_token, load_settings

__all__ = ["register_commands"]


def register_commands(app: typer.Typer) -> None:
    for command in (serve, demo, audit, token):
        app.command(command.__name__)(reporting_errors(command))


def _serve(settings: Settings, http: bool) -> None:
    Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace).close()  # fail before serving
    if http:
        url = f"http://{settings.server.host}:{settings.server.port}{settings.server.path}"
        needs = (
            "bearer token"
            if settings.auth.mode == "tokens"
            else "OAuth access token for " + str(settings.auth.resource)
        )
        err_console.print(f"serving MCP over streamable HTTP at {url} ({needs} required); Ctrl-C stops")
        if settings.catalog_page.enabled:
            page = f"http://{settings.server.host}:{settings.server.port}{settings.catalog_page.path}"
            err_console.print(f"catalog page for people at {page} (log in with a principal's token)")
        if settings.metrics.enabled:
            err_console.print(metrics_notice(settings), highlight=False)
        serve_http(settings)
    else:
        if not settings.stdio_principal:
            err_console.print("stdio needs `stdio_principal: <name>` in dataproducts.yaml (who the agent acts as)")
            raise typer.Exit(1)
        create_server(settings, principal=settings.principal(settings.stdio_principal)).run("stdio")


def serve(
    ctx: typer.Context,
    http: Annotated[bool, typer.Option("--http", help="streamable HTTP instead of stdio")] = False,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8765)")] = None,
) -> None:
    """Serve the registered products over MCP (stdio by default)."""
    settings = state(ctx).settings
    if host or port:
        server = settings.server.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
        settings = settings.model_copy(update={"server": server})
    _serve(settings, http)


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where to build the demo workspace")] = Path(
        "demo-workspace"
    ),
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="serve over HTTP once built")] = True,
    port: Annotated[int, typer.Option(help="HTTP port")] = 8765,
) -> None:
    """Build a sample workspace offline (shop in SQLite, analytics in Parquet), register it and serve it."""
    workspace = build_demo_workspace(directory)
    settings = load_settings(workspace.config_path)
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"port": port})})
    registry = Registry.from_url(settings.resolved_registry_url(), owned_dir=settings.workspace)
    try:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                result = registry.register(contract, actor="demo")
                console.print(f"{result.status:>12}  {contract.name} {result.version}", highlight=False)
    finally:
        registry.close()
    checked = check_workspace(settings)
    failing = sorted({f"{r.product}: {r.check_name}" for r in checked if r.status != "pass"})
    console.print(
        f"\nquality checks: {len(checked) - len(failing)} of {len(checked)} pass"
        + (f"; not passing: {', '.join(failing)}" if failing else "")
        + " (`dataproducts quality` shows them)",
        highlight=False,
    )
    try:
        resolve_model(settings.models.embedding, settings.models.dir)
    except EmbeddingError as exc:
        console.print(f"\n[yellow]not indexed for search_documents/ask:[/] {exc.message}", highlight=False)
    else:
        print_reports(index_workspace(settings))
    url = f"http://{settings.server.host}:{port}{settings.server.path}"
    console.print(f"\n[bold]Demo workspace ready in {workspace.path}[/]\n")
    for name, tok in workspace.tokens.items():
        roles = ", ".join(next(p.roles for p in settings.principals if p.name == name))
        console.print(f"  principal [bold]{name}[/] ({roles}): bearer token {tok}", highlight=False, soft_wrap=True)
    config = {"mcpServers": {"dataproducts": {"type": "http", "url": url, "headers": {"Authorization": "Bearer …"}}}}
    stdio = {
        "mcpServers": {
            "dataproducts": {
                "command": "dataproducts",
                "args": ["--config", str(workspace.config_path.resolve()), "serve"],
            }
        }
    }
    console.print("\nConnect an MCP client over HTTP:", highlight=False)
    typer.echo(json.dumps(config, indent=2, ensure_ascii=False))
    console.print("or over stdio (acts as the stdio_principal):", highlight=False)
    typer.echo(json.dumps(stdio, indent=2))
    if serve_after:
        _serve(settings, http=True)


def audit(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option(help="only this principal")] = None,
    tool: Annotated[str | None, typer.Option(help="only this tool")] = None,
    product: Annotated[str | None, typer.Option(help="only this product")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="ok | error | denied")] = None,
    since: Annotated[str | None, typer.Option(help="only the last 30m / 24h / 7d (--stats: default 24h)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many rows, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    stats: Annotated[
        bool, typer.Option("--stats", help="calls per principal/product/tool/outcome over the window instead")
    ] = False,
) -> None:
    """List audit records of served and refused requests, with the physical objects each statement read."""
    try:
        span = parse_duration(since or DEFAULT_WINDOW)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    registry = state(ctx).registry()
    if stats:
        try:
            show_audit_stats(
                registry,
                window=since or DEFAULT_WINDOW,
                span=span,
                principal=principal,
                tool=tool,
                product=product,
                outcome=outcome,
                as_json=as_json,
            )
        finally:
            registry.close()
        return
    start = datetime.now(UTC) - span if since else None
    try:
        records = AuditLog.from_registry(registry).query(
            principal=principal, tool=tool, product=product, outcome=outcome, since=start, limit=limit
        )
    finally:
        registry.close()
    if as_json:
        for record in records:
            typer.echo(record.model_dump_json())
        return
    table = Table("time (UTC)", "principal", "tool", "product", "outcome", "rows", "bytes", "ms", "error", "objects")
    for r in records:
        table.add_row(
            f"{r.time:%Y-%m-%d %H:%M:%S}",
            r.principal,
            r.tool,
            r.product or "",
            r.outcome,
            "" if r.rows is None else str(r.rows),
            "" if r.bytes is None else str(r.bytes),
            f"{r.latency_ms:.1f}",
            r.error_code or "",
            ", ".join(r.objects or []),
        )
    console.print(table)


def token(name: Annotated[str, typer.Argument(help="principal the token is for")]) -> None:
    """Generate a bearer token and the principal entry (with its sha256) to paste into dataproducts.yaml."""
    value = secrets.token_urlsafe(32)
    console.print(f"token (give it to the client, store nowhere else): {value}", highlight=False)
    console.print(f"principals:\n  - {{name: {name}, roles: [], token_sha256: {hash_token(value)}}}", markup=False)
