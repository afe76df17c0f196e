"""What every command shares: the settings of the current run, the console, and error reporting."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console

from catalog.errors import DataProductsError
from catalog.registry import Registry
from servers.settings import Settings, load_settings

__all__ = ["CLIState", "console", "err_console", "fail", "print_error", "reporting_errors", "run_async", "state"]

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


@dataclass
class CLIState:
    config_path: Path | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def registry(self) -> Registry:
        return Registry.from_url(self.settings.resolved_registry_url())

    @staticmethod
    def actor() -> str:
        """Who is making a catalog change: $DATAPRODUCTS_ACTOR, else the OS user."""
        return os.environ.get("DATAPRODUCTS_ACTOR") or getpass.getuser()


def state(ctx: typer.Context) -> CLIState:
    found = ctx.find_object(CLIState)
    if found is None:  # pragma: no cover - the root callback always sets it
        found = ctx.ensure_object(CLIState)
    return found


def reporting_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command so that a user error prints one actionable message and exits 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except DataProductsError as exc:
            fail(exc)

    return wrapper


def run_async(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    return anyio.run(fn, *args)


def fail(error: DataProductsError | str, *, code: int = 1) -> NoReturn:
    """Print an error the user can act on and exit (inside a command)."""
    print_error(error)
    raise typer.Exit(code)


def print_error(error: DataProductsError | str) -> None:
    message = error.message if isinstance(error, DataProductsError) else error
    label = f"[bold red]{error.code}[/]" if isinstance(error, DataProductsError) else "[bold red]error[/]"
    err_console.print(f"{label}:", end=" ")
    err_console.print(message, markup=False, highlight=False)
