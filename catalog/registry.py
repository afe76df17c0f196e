"""The registry: every registered version of every product contract, with history and search.

SQLAlchemy Core over a SQLite file by default, or PostgreSQL by URL (several server replicas may share
one PostgreSQL registry). The API is synchronous; async callers wrap it in a worker thread. Every
write runs in one transaction: a refused or failed registration leaves the registry as it was.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from sqlalchemy import Connection, Engine, Row, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from catalog._model import FrozenModel
from catalog._registry_errors import guard_availability
from catalog._registry_location import prepare_sqlite_location, registry_unavailable
from catalog._registry_search import ProductMatch, rank
from catalog._registry_tables import (
    engine_for,
    metadata,
    product_events,
    product_versions,
    products,
    utcnow,
    write_transaction,
)
from catalog.contract import ProductContract
from catalog.errors import ContractError, ContractProblem, NotFoundError, RegistrationError, UnavailableError
from catalog.lineage import LineageGraph, build_lineage
from catalog.suggest import close_matches
from catalog.versioning import ContractDiff, canonical_json, content_hash, diff_contracts, version_refusal

__all__ = ["HistoryEntry", "ProductMatch", "RegistrationResult", "Registry", "RegistryEntry", "unknown_product"]


_INSERT_RACE_RETRIES = 3

#: Registry methods raise UnavailableError when the database is down, locked or full.
_available = guard_availability("registry", lambda registry: registry.engine)


class RegistrationResult(FrozenModel):
    name: str
    version: str
    status: Literal["created", "new_version", "unchanged"]
    previous_version: str | None = None
    diff: ContractDiff | None = None
    message: str


class RegistryEntry(FrozenModel):
    """One product as the registry lists it: its latest version, owner, status and last change."""

    name: str
    domain: str
    version: str
    title: str
    description: str
    owner_team: str
    tags: list[str]
    deprecated: bool
    deprecation_note: str | None = None
    updated_at: datetime


class HistoryEntry(FrozenModel):
    at: datetime
    actor: str
    event: Literal["registered", "deprecated"]
    version: str
    summary: str


class Registry:
    """Product contracts by name and version. Construct with :meth:`from_url`; close with :meth:`close`.

    Every public method raises :class:`~catalog.errors.UnavailableError` when the database is
    unreachable, locked by another writer or out of space (see :mod:`catalog._registry_errors`).
    """

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, *, owned_dir: Path | None = None) -> Registry:
        """A registry on a SQLAlchemy URL (or a SQLite file path), schema created if missing.

        A SQLite file inside ``owned_dir`` (the workspace) gets its missing folders created.

        Raises:
            ConnectorUnavailableError: the database cannot be opened or reached; the message names
                the file (or the redacted URL) and what would fix it.
        """
        prepare_sqlite_location(url, owned_dir)
        registry = cls(engine_for(url), owns_engine=True)
        try:
            registry.create_schema()
        except (DBAPIError, UnavailableError) as exc:
            registry.close()
            cause = exc if isinstance(exc, DBAPIError) else exc.__cause__
            if not isinstance(cause, DBAPIError):
                raise
            raise registry_unavailable(url, cause) from cause
        return registry

    @_available
    def create_schema(self) -> None:
        """Create the registry and audit tables that do not exist yet. Idempotent.

        Replicas starting together on one PostgreSQL may race to create a table; the loser looks again.

        Raises:
            sqlalchemy.exc.DBAPIError: the database refuses the DDL for another reason.
        """
        try:
            with write_transaction(self.engine) as conn:
                metadata.create_all(conn, checkfirst=True)
        except (ProgrammingError, IntegrityError):
            with write_transaction(self.engine) as conn:
                metadata.create_all(conn, checkfirst=True)

    def close(self) -> None:
        """Dispose the engine when this registry created it. Idempotent."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @_available
    def register(self, contract: ProductContract, *, actor: str) -> RegistrationResult:
        """Register ``contract`` as a new product or a new version of one.

        Identical content is ``unchanged`` and writes nothing. Changed content needs a higher version;
        breaking schema changes (column removed/renamed/retyped, primary key changed) a higher MAJOR.

        Raises:
            ContractError: the contract has unresolved references (e.g. masking an undeclared column).
            RegistrationError: same version with different content, a lower version, or a breaking change
                without a major bump. (A race with another writer creating the same product is retried.)
        """
        refs = contract.reference_problems()
        if refs:
            raise ContractError(
                f"{contract.name} {contract.version} is not valid",
                [ContractProblem(message=message, path=path) for path, message in refs],
            )
        digest = content_hash(contract)
        for attempt in range(_INSERT_RACE_RETRIES):
            try:
                return self._register_once(contract, digest, actor=actor)
            except IntegrityError as exc:  # another writer created the product first: decide again
                if attempt == _INSERT_RACE_RETRIES - 1:
                    raise RegistrationError(
                        f"{contract.name} kept being registered concurrently by other writers; retry the registration"
                    ) from exc
        raise AssertionError("unreachable")

    def _register_once(self, contract: ProductContract, digest: str, *, actor: str) -> RegistrationResult:
        now = utcnow()
        with write_transaction(self.engine) as conn:
            product = conn.execute(select(products).where(products.c.name == contract.name).with_for_update()).first()
            if product is None:
                conn.execute(
                    products.insert().values(
                        name=contract.name,
                        domain=contract.domain,
                        latest_version=contract.version,
                        deprecated=contract.deprecated,
                        deprecation_note=contract.deprecation_note,
                        created_at=now,
                        updated_at=now,
                    )
                )
                summary = f"first version: {len(contract.columns)} columns"
                self._insert_version(conn, contract, digest, seq=1, actor=actor, at=now, summary=summary)
                self._insert_event(conn, contract.name, "registered", contract.version, actor, now, summary)
                return RegistrationResult(
                    name=contract.name,
                    version=contract.version,
                    status="created",
                    message=f"registered {contract.name} {contract.version}",
                )
            latest = product.latest_version
            same = conn.execute(
                select(product_versions.c.content_sha256).where(
                    product_versions.c.name == contract.name, product_versions.c.version == contract.version
                )
            ).scalar()
            if same == digest:
                note = "" if contract.version == latest else f" (latest is {latest})"
                return RegistrationResult(
                    name=contract.name,
                    version=contract.version,
                    status="unchanged",
                    previous_version=latest,
                    message=f"{contract.name} {contract.version} is already registered with this content{note}",
                )
            diff = self._with_impact(conn, diff_contracts(self._contract(conn, contract.name, latest), contract))
            refusal = version_refusal(latest, contract.version, diff)
            if refusal:
                raise RegistrationError(refusal)
            seq = conn.execute(
                select(func.max(product_versions.c.seq)).where(product_versions.c.name == contract.name)
            ).scalar_one()
            summary = diff.summary()
            self._insert_version(conn, contract, digest, seq=seq + 1, actor=actor, at=now, summary=summary)
            values: dict[str, object] = {"latest_version": contract.version, "updated_at": now}
            if contract.deprecated:
                values |= {"deprecated": True, "deprecation_note": contract.deprecation_note}
            conn.execute(products.update().where(products.c.name == contract.name).values(**values))
            self._insert_event(conn, contract.name, "registered", contract.version, actor, now, summary)
            affected = ", ".join(i.product for i in diff.affected_downstream)
            return RegistrationResult(
                name=contract.name,
                version=contract.version,
                status="new_version",
                previous_version=latest,
                diff=diff,
                message=f"registered {contract.name} {contract.version} (was {latest}): {summary}"
                + (f"; affects downstream: {affected}" if affected else ""),
            )

    def _insert_version(
        self,
        conn: Connection,
        contract: ProductContract,
        digest: str,
        *,
        seq: int,
        actor: str,
        at: datetime,
        summary: str,
    ) -> None:
        conn.execute(
            product_versions.insert().values(
                name=contract.name,
                version=contract.version,
                seq=seq,
                contract=canonical_json(contract),
                content_sha256=digest,
                registered_by=actor,
                registered_at=at,
                change_summary=summary,
            )
        )

    def _insert_event(
        self, conn: Connection, name: str, action: str, version: str, actor: str, at: datetime, summary: str
    ) -> None:
        conn.execute(
            product_events.insert().values(
                name=name, action=action, version=version, actor=actor, at=at, summary=summary
            )
        )

    @_available
    def get(self, name: str, version: str | None = None) -> ProductContract:
        """The contract of ``name`` at ``version`` (default: the latest), with deprecation applied.

        Raises:
            NotFoundError: unknown product (the message names close matches) or version (lists versions).
        """
        with self.engine.connect() as conn:
            product = self._product(conn, name)
            contract = self._contract(conn, name, version or product.latest_version)
        return _deprecated(contract, product.deprecation_note) if product.deprecated else contract

    @_available
    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first.

        Raises:
            NotFoundError: unknown product.
        """
        with self.engine.connect() as conn:
            self._product(conn, name)
            return self._versions(conn, name)

    @_available
    def history(self, name: str) -> list[HistoryEntry]:
        """Registrations and deprecations of ``name``, newest first: who, when, version, what changed.

        Raises:
            NotFoundError: unknown product.
        """
        with self.engine.connect() as conn:
            self._product(conn, name)
            rows = conn.execute(
                select(product_events).where(product_events.c.name == name).order_by(product_events.c.id.desc())
            ).all()
        return [
            HistoryEntry(at=r.at, actor=r.actor, event=r.action, version=r.version, summary=r.summary) for r in rows
        ]

    @_available
    def diff(self, name: str, a: str, b: str) -> ContractDiff:
        """What changed from version ``a`` to version ``b`` of ``name``.

        Raises:
            NotFoundError: unknown product or version.
        """
        with self.engine.connect() as conn:
            self._product(conn, name)
            return self._with_impact(conn, diff_contracts(self._contract(conn, name, a), self._contract(conn, name, b)))

    @_available
    def deprecate(self, name: str, *, actor: str, note: str) -> None:
        """Mark ``name`` deprecated (all versions), recorded in its history.

        Raises:
            NotFoundError: unknown product.
        """
        now = utcnow()
        with write_transaction(self.engine) as conn:
            product = self._product(conn, name)
            conn.execute(
                products.update()
                .where(products.c.name == name)
                .values(deprecated=True, deprecation_note=note, updated_at=now)
            )
            self._insert_event(conn, name, "deprecated", product.latest_version, actor, now, note)

    def search(self, text: str, *, limit: int = 20, include_deprecated: bool = False) -> list[ProductContract]:
        """Latest contracts of the products matching the words of ``text``, best first (see :meth:`search_matches`).

        Callers filter the result by policy before showing it.
        """
        return [
            match.contract for match in self.search_matches(text, limit=limit, include_deprecated=include_deprecated)
        ]

    @_available
    def search_matches(self, text: str, *, limit: int = 20, include_deprecated: bool = False) -> list[ProductMatch]:
        """Products matching the words of ``text``, best first, with their score and matched fields.

        Ranking: :func:`catalog._registry_search.rank` (weighted word matches).
        """
        return rank(self._latest_contracts(include_deprecated=include_deprecated), text, limit=limit)

    @_available
    def list_contracts(self, domain: str | None = None, include_deprecated: bool = True) -> list[ProductContract]:
        """The latest contract of every product (optionally of one domain), by name, deprecation applied."""
        return self._latest_contracts(include_deprecated=include_deprecated, domain=domain)

    def _latest_contracts(self, *, include_deprecated: bool, domain: str | None = None) -> list[ProductContract]:
        rows = self._latest_rows(include_deprecated=include_deprecated, domain=domain)
        return [_with_deprecation(r.contract, r.deprecated, r.deprecation_note) for r in rows]

    def _latest_rows(self, *, include_deprecated: bool, domain: str | None) -> Sequence[Row[Any]]:
        """Each product's row joined with its latest version's contract text, by name."""
        query = select(products, product_versions.c.contract).join(
            product_versions,
            (products.c.name == product_versions.c.name) & (products.c.latest_version == product_versions.c.version),
        )
        if domain is not None:
            query = query.where(products.c.domain == domain)
        if not include_deprecated:
            query = query.where(products.c.deprecated.is_(False))
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(products.c.name)).all()

    def _product(self, conn: Connection, name: str) -> Row[tuple[object, ...]]:
        row = conn.execute(select(products).where(products.c.name == name)).first()
        if row is not None:
            return row
        names = list(conn.execute(select(products.c.name).order_by(products.c.name)).scalars())
        raise unknown_product(name, names)

    def _versions(self, conn: Connection, name: str) -> list[str]:
        query = select(product_versions.c.version).where(product_versions.c.name == name)
        return list(conn.execute(query.order_by(product_versions.c.seq)).scalars())

    def _contract(self, conn: Connection, name: str, version: str) -> ProductContract:
        text = conn.execute(
            select(product_versions.c.contract).where(
                product_versions.c.name == name, product_versions.c.version == version
            )
        ).scalar()
        if text is None:
            raise NotFoundError(
                f"{name} has no version {version!r}; versions are {', '.join(self._versions(conn, name))}"
            )
        return ProductContract.model_validate(json.loads(text))

    @_available
    def list_entries(self, domain: str | None = None, include_deprecated: bool = True) -> list[RegistryEntry]:
        """The entry of every product (optionally of one domain), by name: its latest version and status."""
        entries = []
        for row in self._latest_rows(include_deprecated=include_deprecated, domain=domain):
            contract = ProductContract.model_validate(json.loads(row.contract))
            entries.append(
                RegistryEntry(
                    name=row.name,
                    domain=row.domain,
                    version=row.latest_version,
                    title=contract.title,
                    description=contract.description,
                    owner_team=contract.owner.team,
                    tags=contract.tags,
                    deprecated=bool(row.deprecated),
                    deprecation_note=row.deprecation_note,
                    updated_at=row.updated_at,
                )
            )
        return entries

    # -- lineage -------------------------------------------------------------------------------------

    def lineage_graph(self, *, dialects: dict[str, str] | None = None) -> LineageGraph:
        """The lineage graph of the latest contracts (:func:`catalog.lineage.build_lineage`)."""
        return build_lineage(self.list_contracts(), dialects=dialects)

    def _with_impact(self, conn: Connection, diff: ContractDiff) -> ContractDiff:
        """``diff`` with the downstream products its breaking change reaches (unchanged when not breaking).

        The graph holds the latest contract of every other product and the ``from_version`` of this
        one: its consumers were built on that version's columns.
        """
        if not diff.breaking:
            return diff
        before = self._contract(conn, diff.name, diff.from_version)
        rows = conn.execute(
            select(product_versions.c.contract).join(
                products,
                (products.c.name == product_versions.c.name)
                & (products.c.latest_version == product_versions.c.version),
            )
        ).scalars()
        others = [ProductContract.model_validate(json.loads(text)) for text in rows]
        graph = build_lineage([before, *(c for c in others if c.name != diff.name)])
        impact = graph.downstream_impact(diff.name, diff.breaking_columns)
        return diff.model_copy(update={"affected_downstream": impact})


def unknown_product(
    name: str,
    candidates: Sequence[str],
    *,
    listing: str = "registered products",
    empty: str = "the registry is empty; register a contract first",
) -> NotFoundError:
    """The not-found error for product ``name``: close names among ``candidates``, else a listing of them.

    The message names ``candidates`` only, so a caller answering a principal passes just the products
    that principal may read (never every registered name). ``listing`` introduces the list of
    candidates; ``empty`` is the hint when there are none.
    """
    names = sorted(candidates)
    close = close_matches(name, names, n=3, cutoff=0.5)
    if close:
        hint = f"did you mean {', '.join(repr(c) for c in close)}?"
    elif names:
        hint = f"{listing}: {', '.join(names[:20])}{' …' if len(names) > 20 else ''}"
    else:
        hint = empty
    return NotFoundError(f"no product {name!r}; {hint}")


def _with_deprecation(text: str, deprecated: bool, note: str | None) -> ProductContract:
    contract = ProductContract.model_validate(json.loads(text))
    return _deprecated(contract, note) if deprecated else contract


def _deprecated(contract: ProductContract, note: str | None) -> ProductContract:
    return contract.model_copy(update={"deprecated": True, "deprecation_note": note})
