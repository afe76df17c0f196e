"""Where a registry lives: create the folders the workspace owns, explain the ones it does not.

A new workspace names ``sqlite:///.dataproducts/registry.db`` before ``.dataproducts/`` exists; the
registry creates that folder. A SQLite file outside the workspace, a folder that cannot be written,
or a server that does not answer fail with one line naming the file (or the URL without its
password) and the fix, never with a driver traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from catalog.errors import ConnectorUnavailableError

__all__ = ["prepare_sqlite_location", "registry_unavailable", "sqlite_file"]

_FIX = "set registry_url in dataproducts.yaml (or $DATAPRODUCTS_REGISTRY_URL) to a file you can write"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (or of a plain path), None for other stores and in-memory databases."""
    if "://" not in url:
        return Path(url).expanduser()
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def prepare_sqlite_location(url: str, owned_dir: Path | None) -> None:
    """Create the missing folders of a SQLite registry file that lies inside ``owned_dir``.

    Raises:
        ConnectorUnavailableError: the folder cannot be created (e.g. no permission).
    """
    path = sqlite_file(url)
    if path is None or owned_dir is None or path.parent.exists():
        return
    if not path.resolve().is_relative_to(owned_dir.resolve()):
        return  # not ours to create: opening it reports the missing folder
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConnectorUnavailableError(
            f"cannot create the registry folder {str(path.parent)!r}: {exc.strerror or exc}; "
            f"fix its permissions or {_FIX}",
            orig=exc,
        ) from exc


def registry_unavailable(url: str, exc: DBAPIError) -> ConnectorUnavailableError:
    """One actionable error for a registry database that could not be opened or reached."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    path = sqlite_file(url)
    if path is None:
        shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
        return ConnectorUnavailableError(
            f"cannot reach the registry database {shown}: {reason}; check that it is running and that "
            "registry_url in dataproducts.yaml is right",
            orig=exc,
        )
    folder = path.parent
    if not folder.is_dir():
        detail = f"its folder {str(folder)!r} does not exist; create it or {_FIX}"
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        detail = f"it is not writable by this user; fix its permissions or {_FIX}"
    else:
        detail = f"{reason}; {_FIX}"
    return ConnectorUnavailableError(f"cannot open the registry database {str(path)!r}: {detail}", orig=exc)
