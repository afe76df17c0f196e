"""Copying a PostgreSQL source into a replica file with DuckDB's ``postgres`` scanner.

The scanner comes from the ``duckdb-extension-postgres`` PyPI package (``dataproducts[replicas]``),
which ships the extension built for exactly the installed DuckDB under
``duckdb_extension_postgres/extensions/v<version>/``; it is loaded from that file, never downloaded.
Without the package, the refresher reads PostgreSQL through its connector, page by page.

The statement the scanner runs on PostgreSQL (``postgres_query``) is built by our compiler in the
PostgreSQL dialect over the product's governed source — the operator's view, or the masked-at-rest
view whose masks PostgreSQL computes — so masking happens in the source, and rows travel in
PostgreSQL's binary COPY format straight into DuckDB, with no Python value in between.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import duckdb
import sqlalchemy as sa
from sqlglot import exp

from catalog.compile import condition_on, governed_source, source_alias
from catalog.policy import GovernedView
from catalog.query import Condition
from connectors.base import Connector

__all__ = ["postgres_extension", "scan_statement", "scanner_dsn"]


def postgres_extension(folder: Path) -> Path | None:
    """The ``postgres`` scanner for the installed DuckDB, as a file DuckDB can load; None without the package.

    DuckDB finds an extension's entry point by its file name, and the extension is ``postgres_scanner``
    while the package ships ``postgres.duckdb_extension``: a symbolic link in ``folder`` gives it its name.
    """
    spec = importlib.util.find_spec("duckdb_extension_postgres")
    if spec is None or spec.origin is None:
        return None
    shipped = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "postgres.duckdb_extension"
    if not shipped.is_file():
        return None
    named = folder / f"postgres_scanner-v{duckdb.__version__}" / "postgres_scanner.duckdb_extension"
    if not (named.is_symlink() and named.resolve() == shipped.resolve()):
        named.parent.mkdir(parents=True, exist_ok=True)
        partial = named.with_name(f"{named.name}.{os.getpid()}")
        partial.unlink(missing_ok=True)
        partial.symlink_to(shipped)
        os.replace(partial, named)
    return named


def scanner_dsn(source: Connector) -> str | None:
    """The libpq connection string of a PostgreSQL connector (None for other stores)."""
    config = source.config
    if config.kind != "postgresql" or config.url is None:
        return None
    url = sa.make_url(config.url.get_secret_value())
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def scan_statement(
    view: GovernedView, columns: list[str], *, hash_salt: str, changed_after: Condition | None = None
) -> str:
    """``SELECT <columns> FROM <governed source> [WHERE <cursor> > <watermark>]`` in PostgreSQL's dialect.

    Raises:
        InvalidRequestError: the watermark does not fit the cursor column's type.
    """
    alias = source_alias(view)
    select = exp.select(*(exp.column(exp.to_identifier(c, quoted=True), table=alias) for c in columns))
    select = select.from_(governed_source(view, dialect="postgres", hash_salt=hash_salt))
    if changed_after is not None:
        select = select.where(condition_on(view, changed_after, alias))
    return select.sql(dialect="postgres")
