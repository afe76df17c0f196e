"""Retrieval commands: index (products' text and the catalog) and ask (a local, cited answer)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from catalog.errors import ConfigError
from catalog.principal import Principal
from embeddings.answer import NO_ANSWER, Answer
from embeddings.index import IndexReport
from servers.cli._common import console, err_console, reporting_errors, run_async, state
from servers.cli._progress import rich_progress
from servers.service import DataProductsService
from servers.settings import Settings

__all__ = ["index_workspace", "print_reports", "register_commands"]


def register_commands(app: typer.Typer) -> None:
    for command in (index, ask):
        app.command(command.__name__)(reporting_errors(command))


def index(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Argument(help="one product; default: every product with retrieval:")] = None,
    rebuild: Annotated[bool, typer.Option(help="re-embed everything instead of only new and changed rows")] = False,
) -> None:
    """Index products' text fields for search_documents and ask (incremental), and the catalog itself."""
    print_reports(index_workspace(state(ctx).settings, product=product, rebuild=rebuild))


def index_workspace(settings: Settings, *, product: str | None = None, rebuild: bool = False) -> list[IndexReport]:
    """Index one or every retrieval product, then the catalog, drawing progress on stderr.

    Raises:
        EmbeddingError: the embedding model is missing (run `dataproducts models build`).
        NotFoundError, InvalidRequestError, ConnectorError.
    """

    async def run() -> list[IndexReport]:
        async with DataProductsService.open(settings) as service:
            with rich_progress(err_console) as progress:
                return await service.index_products(product=product, rebuild=rebuild, progress=progress)

    return run_async(run)


def print_reports(reports: list[IndexReport]) -> None:
    table = Table("product", "rows", "new", "changed", "deleted", "unchanged", "chunks embedded", "seconds", "notes")
    for r in reports:
        notes = "; ".join(f"{f}: {why}" for f, why in r.skipped_fields.items())
        if r.truncated_inputs:
            notes = "; ".join(filter(None, [notes, f"{r.truncated_inputs} inputs truncated to the model's limit"]))
        table.add_row(
            r.product,
            str(r.rows_seen),
            str(r.rows_new),
            str(r.rows_changed),
            str(r.rows_deleted),
            str(r.rows_unchanged),
            str(r.chunks_embedded),
            f"{r.seconds:.1f}",
            notes,
        )
    console.print(table)


def _principal(settings: Settings, name: str | None) -> Principal:
    chosen = name or settings.stdio_principal
    if not chosen:
        raise ConfigError("say who is asking: --as PRINCIPAL, or set stdio_principal in dataproducts.yaml")
    return settings.principal(chosen)


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="a question about the products' text")],
    product: Annotated[str | None, typer.Option(help="only this product")] = None,
    principal: Annotated[
        str | None, typer.Option("--as", help="principal to ask as (default: stdio_principal)")
    ] = None,
    k: Annotated[int, typer.Option(help="passages to retrieve")] = 4,
    context_only: Annotated[bool, typer.Option("--context-only", help="print what would be sent; no model")] = False,
    max_tokens: Annotated[int, typer.Option(help="longest answer, in tokens")] = 200,
) -> None:
    """Answer from governed passages with a local GGUF chat model, streaming, with numbered citations."""
    settings = state(ctx).settings
    who = _principal(settings, principal)

    async def answer() -> Answer:
        async with DataProductsService.open(settings) as service:
            return await service.ask(
                who,
                question,
                product=product,
                k=k,
                max_tokens=max_tokens,
                context_only=context_only,
                on_token=lambda piece: typer.echo(piece, nl=False),
            )

    found = run_async(answer)
    for warning in found.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if context_only:
        for message in found.messages:
            console.rule(message["role"])
            typer.echo(message["content"])
        return
    if found.text is None:
        typer.echo(NO_ANSWER + " (no passage you may read matched)")
        return
    typer.echo("")
    if not found.cited:
        err_console.print("[yellow]the model cited no passage: check the answer against the sources[/]")
    console.rule("sources")
    for number, passage in enumerate(found.passages, start=1):
        mark = "cited" if number in found.cited else "retrieved"
        typer.echo(f"[{number}] {passage.source} ({mark})")
