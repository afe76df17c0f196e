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
from sqlalchemy.exc import SQLAlchemyError

from catalog.errors import DataProductsError
from catalog.registry import Registry
from servers.settings import Settings, load_settings

__all__ = [
    "CLIState",
    "console",
    "debugging",
    "environment_error",
    "err_console",
    "fail",
    "print_error",
    "reporting_errors",
    "run_async",
    "set_debug",
    "state",
]

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
        return Registry.from_url(self.settings.resolved_registry_url(), owned_dir=self.settings.workspace)

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
    """Wrap a command so that an expected failure prints one actionable message and exits 1, without a traceback.

    Expected failures are our own errors and what the environment refuses (a file or folder, a database
    that cannot be opened); ``--debug`` lets them propagate with their traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except DataProductsError as exc:
            if debugging():
                raise
            fail(exc)
        except (SQLAlchemyError, OSError) as exc:
            if debugging():
                raise
            fail(environment_error(exc))
        except ExceptionGroup as group:  # raised from a task group (a server's lifespan): its one cause
            leaf = _only_leaf(group)
            if debugging() or not isinstance(leaf, DataProductsError | SQLAlchemyError | OSError):
                raise
            fail(leaf if isinstance(leaf, DataProductsError) else environment_error(leaf))

    return wrapper


def _only_leaf(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The single exception at the bottom of nested groups, or None when there are several."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found


def environment_error(exc: SQLAlchemyError | OSError) -> str:
    """One line for a failure of the environment (a file, a folder, a database) that is no bug of ours."""
    if isinstance(exc, OSError):
        where = f" {exc.filename!s}" if exc.filename else ""
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"{reason}:{where} (run with --debug for the traceback)"
    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else exc).strip().splitlines()[0]
    return f"database error: {reason} (run with --debug for the traceback)"


_debug = False


def set_debug(enabled: bool) -> None:
    """Whether expected failures of this run show their traceback (the root ``--debug`` flag)."""
    global _debug
    _debug = enabled


def debugging() -> bool:
    return _debug


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
