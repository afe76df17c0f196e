"""The ``dataproducts`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from catalog.errors import DataProductsError
from servers.cli import (
    catalog_cmds,
    lineage_cmds,
    metrics_cmds,
    models_cmds,
    quality_cmds,
    replica_cmds,
    retrieval_cmds,
    serve_cmds,
)
from servers.cli._common import CLIState, debugging, environment_error, print_error, set_debug

__all__ = ["app", "main"]

app = typer.Typer(
    name="dataproducts",
    help="Governed data products for AI agents: catalog, MCP server, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="dataproducts.yaml (default: $DATAPRODUCTS_CONFIG or ./dataproducts.yaml)"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a failure")] = False,
) -> None:
    set_debug(debug)
    ctx.obj = CLIState(config_path=config)


catalog_cmds.register_commands(app)
serve_cmds.register_commands(app)
retrieval_cmds.register_commands(app)
models_cmds.register_commands(app)
lineage_cmds.register_commands(app)
quality_cmds.register_commands(app)
metrics_cmds.register_commands(app)
replica_cmds.register_commands(app)


def main() -> None:
    """Console-script entry point: expected failures print one actionable line and exit 1 (``--debug``: traceback)."""
    try:
        app(standalone_mode=True)
    except DataProductsError as exc:
        if debugging():
            raise
        print_error(exc)
        sys.exit(1)
    except (SQLAlchemyError, OSError) as exc:
        if debugging():
            raise
        print_error(environment_error(exc))
        sys.exit(1)
