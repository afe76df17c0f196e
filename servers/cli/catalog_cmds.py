"""Catalog commands: validate, register, list, show, diff, history, deprecate, init."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from catalog.draft import draft_contract
from catalog.errors import ConfigError, ContractError, ContractProblem, DataProductsError
from catalog.loader import LoadedContract, dump_contract, load_file
from catalog.placeholders import placeholder_problems
from catalog.validate import validate_against_source
from connectors import connector_for
from servers.cli._common import console, err_console, fail, reporting_errors, run_async, state

__all__ = ["register_commands"]

Files = Annotated[list[Path], typer.Argument(help="contract YAML files", exists=True, dir_okay=False)]


def register_commands(app: typer.Typer) -> None:
    for command in (validate, register, list_products, show, diff, history, deprecate, init):
        name = "list" if command is list_products else command.__name__
        app.command(name)(reporting_errors(command))


def _load_all(files: list[Path]) -> tuple[list[tuple[Path, LoadedContract]], list[ContractProblem]]:
    loaded: list[tuple[Path, LoadedContract]] = []
    problems: list[ContractProblem] = []
    for path in files:
        try:
            loaded.extend((path, item) for item in load_file(path))
        except ContractError as exc:
            problems.extend(exc.problems or [ContractProblem(message=exc.message, file=str(path))])
    return loaded, problems


async def _live_problems(ctx: typer.Context, loaded: list[tuple[Path, LoadedContract]]) -> list[ContractProblem]:
    settings = state(ctx).settings
    problems: list[ContractProblem] = []
    for path, item in loaded:
        contract = item.contract
        try:
            config = settings.connection(contract.source.connection)
        except ConfigError as exc:
            problems.append(ContractProblem(message=exc.message, path="source.connection", file=str(path)))
            continue
        async with connector_for(config) as connector:
            problems += [item.locate(p) for p in await validate_against_source(contract, connector)]
    return problems


def _checked(
    ctx: typer.Context, files: list[Path], live: bool, *, allow_draft: bool = False
) -> tuple[list[tuple[Path, LoadedContract]], list[ContractProblem]]:
    """The contracts of ``files`` and every problem found in them (and, when ``live``, against their sources).

    ``TODO`` placeholders left by ``init`` are problems unless ``allow_draft``.
    """
    loaded, problems = _load_all(files)
    if not allow_draft:
        problems += [p for _path, item in loaded for p in placeholder_problems(item)]
    if live and loaded:
        problems += run_async(_live_problems, ctx, loaded)
    return loaded, problems


def _report(problems: list[ContractProblem]) -> None:
    for problem in problems:
        typer.echo(str(problem), err=True)
    err_console.print(f"[bold red]{len(problems)} problem(s)[/]")


def validate(
    ctx: typer.Context,
    files: Files,
    live: Annotated[bool, typer.Option(help="also check the contract against its live source")] = True,
) -> None:
    """Check contracts; report every problem with file, line, field and what would be valid."""
    loaded, problems = _checked(ctx, files, live)
    if problems:
        _report(problems)
        raise typer.Exit(1)
    for path, item in loaded:
        console.print(f"[green]ok[/] {path}: {item.contract.name} {item.contract.version}")


def register(
    ctx: typer.Context,
    files: Files,
    live: Annotated[bool, typer.Option(help="validate against the live source first")] = True,
    allow_draft: Annotated[
        bool, typer.Option("--allow-draft", help="register even with TODO placeholders left from `init`")
    ] = False,
) -> None:
    """Register contracts (a new version only when the content changed; breaking changes need a major bump)."""
    loaded, problems = _checked(ctx, files, live, allow_draft=allow_draft)
    if problems:
        _report(problems)
        drafts = sum(p.message.startswith("placeholder left from the draft") for p in problems)
        if drafts:
            err_console.print(
                f"nothing was registered: {drafts} TODO placeholder(s) left from `dataproducts init`; "
                "fill them in, or pass --allow-draft to register the draft as it is",
                highlight=False,
            )
        else:
            err_console.print("nothing was registered")
        raise typer.Exit(1)
    registry = state(ctx).registry()
    try:
        for path, item in loaded:
            try:
                result = registry.register(item.contract, actor=state(ctx).actor())
            except DataProductsError as exc:
                fail(f"{path}: {exc.message}")
            console.print(f"{result.status:>12}  {result.name} {result.version}  ({path})", highlight=False)
            if result.diff is not None:
                typer.echo(result.diff.render())
    finally:
        registry.close()


def list_products(
    ctx: typer.Context,
    domain: Annotated[str | None, typer.Option(help="only this domain")] = None,
    deprecated: Annotated[bool, typer.Option(help="include deprecated products")] = True,
) -> None:
    """List registered products."""
    registry = state(ctx).registry()
    try:
        contracts = registry.list_contracts(domain=domain, include_deprecated=deprecated)
    finally:
        registry.close()
    table = Table(Column("name", no_wrap=True), Column("version", no_wrap=True), "title", "owner", "tags", "status")
    for c in contracts:
        table.add_row(c.name, c.version, c.title, c.owner.team, ", ".join(c.tags), "deprecated" if c.deprecated else "")
    console.print(table)


def show(
    ctx: typer.Context,
    name: str,
    version: Annotated[str | None, typer.Option(help="a registered version; default latest")] = None,
) -> None:
    """Print a registered contract as YAML."""
    registry = state(ctx).registry()
    try:
        typer.echo(dump_contract(registry.get(name, version)))
    finally:
        registry.close()


def diff(ctx: typer.Context, name: str, a: str, b: str) -> None:
    """What changed between two registered versions (and whether it breaks consumers)."""
    registry = state(ctx).registry()
    try:
        typer.echo(registry.diff(name, a, b).render())
    finally:
        registry.close()


def history(ctx: typer.Context, name: str) -> None:
    """Who changed a product, when, and what."""
    registry = state(ctx).registry()
    try:
        entries = registry.history(name)
    finally:
        registry.close()
    table = Table("when (UTC)", "who", "version", "event", "what changed")
    for e in entries:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.version, e.event, e.summary)
    console.print(table)


def deprecate(
    ctx: typer.Context,
    name: str,
    note: Annotated[str, typer.Option(help="why, and what to use instead")],
) -> None:
    """Mark a product deprecated; agents are warned on every read."""
    registry = state(ctx).registry()
    try:
        registry.deprecate(name, actor=state(ctx).actor(), note=note)
    finally:
        registry.close()
    console.print(f"deprecated {name}")


def init(
    ctx: typer.Context,
    connection: Annotated[str, typer.Option(help="a connection of dataproducts.yaml")],
    table: Annotated[str, typer.Option(help="source table or view")],
    name: Annotated[str | None, typer.Option(help="product name <domain>.<product>")] = None,
    owner: Annotated[str, typer.Option(help="owning team")] = "TODO-team",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Draft a contract from the live schema (columns, types, key, row count, PII candidates)."""
    config = state(ctx).settings.connection(connection)
    product = name or f"{connection}.{table.split('.')[-1]}".lower()

    async def introspect() -> str:
        async with connector_for(config) as connector:
            schema = await connector.introspect(table)
        return draft_contract(schema, name=product, connection=connection, owner_team=owner)

    text = run_async(introspect)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}: fill in the TODOs and confirm the PII candidates, then `dataproducts validate`")
    else:
        typer.echo(text)
