"""PostgreSQL's wall: governed statements read governed views, as a role that can read nothing else.

What lives in the database (names from the connection's ``options``)
    * schema ``dataproducts_governed`` (``governed_schema``), owned by the connection's login:
      one view per governed source body, named ``g_<digest of the body>``, so a contract version or
      another principal's governance gives another view (views follow the registry by
      construction); ``salts`` and ``bindings``, two tables only the owner can read; and the
      functions ``bound(view)`` and ``run(statement)``. A view whose body drops rows (row filters)
      is a ``security_barrier``: PostgreSQL applies its filters before any condition of the
      statement that is not leakproof, so no failing expression can probe hidden rows. Other views
      are plain, so PostgreSQL flattens them and keeps its statistics (measured: a barrier on an
      unfiltered view turned TPC-H Q1's hash aggregate into a sort, 2x slower).
    * role ``dataproducts_reader`` (``reader_role``), NOLOGIN, granted USAGE on the schema and SELECT
      on each view — nothing else. Physical names in view bodies are qualified with ``schema``
      (default ``public``).

Three measured escapes shaped it
    1. ``pg_views`` and ``pg_get_viewdef`` are readable by PUBLIC. A view body therefore never holds
       the hash salt: the mask ``MD5('<salt>' || …)`` reads ``(SELECT salt FROM salts WHERE id = …)``,
       where the id is a PBKDF2 fingerprint of the salt (slower to test guesses against than the
       masked values themselves, which any caller sees).
    2. One reader role serves every principal, so holding SELECT on a view cannot be the whole
       check: each view filters its body with ``bound('<view>')``, a SECURITY DEFINER function that is true
       when the transaction's ``dataproducts.bindings`` setting holds the view's random token
       (``bindings``, owner-only) and raises otherwise. The connector sets the tokens of the
       statement's own views only, so another principal's view refuses to produce rows.
    3. ``SET LOCAL ROLE`` alone is no wall: one SELECT can call ``set_config('role', 'none', true)``
       and then ``query_to_xml('select … from people', …)``, which plans its query as the login. So
       the statement runs inside ``run(statement)``, a SECURITY DEFINER function *owned by the
       reader*; inside a security-definer function PostgreSQL refuses to change ``role`` or
       ``session_authorization``, so everything the statement does, dynamic SQL included, is done
       as the reader. The connector describes the statement first (its column types form the
       ``AS t(...)`` list) and caches that per statement text.

Lifecycle
    Views are created on demand and dropped lazily (:mod:`connectors._pg_views`;
    ``governed_view_max_age_days``, default 30). A login that may not create the role or the schema
    gets a :class:`ConfigError` that lists what a DBA must run.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.sql
from psycopg import pq
from sqlglot import exp

from catalog.errors import ConfigError, QueryExecutionError
from catalog.governed_source import GovernedMark
from catalog.query import Limits, RowSet
from connectors._common import Deadline, driver_message, fetch_capped
from connectors._governed import digest, physical_tables
from connectors._pg_views import UNBOUND, GovernedViews
from connectors.base import GovernedRelation, Prepared

__all__ = ["PostgresWall"]

_UNDEFINED_TABLE = "42P01"
# What the store says when a statement reaches outside its governed sources: insufficient privilege
# (also "cannot set parameter role within security-definer function"), a name it cannot see, an unbound view.
_REFUSALS = ("42501", _UNDEFINED_TABLE, UNBOUND)
_OPTION = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DESCRIBED = 512  # statement texts whose column types are kept


@dataclass(frozen=True)
class _Described:
    names: list[str]
    wrapped: str


class PostgresWall:
    """Binds governed sources to governed views and runs statements as the reader role."""

    def __init__(self, connection: str, options: Mapping[str, Any]) -> None:
        """Raises:
        ConfigError: an option that is not a plain lower-case identifier, or a bad max age.
        """
        self.connection = connection
        self.schema = self._option(options, "schema", "public")
        self.governed_schema = self._option(options, "governed_schema", "dataproducts_governed")
        self.reader = self._option(options, "reader_role", "dataproducts_reader")
        try:
            self.max_age_days = float(options.get("governed_view_max_age_days", 30))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"connection {connection!r}: governed_view_max_age_days must be a number") from exc
        self.views = GovernedViews(
            connection, schema=self.governed_schema, reader=self.reader, max_age_days=self.max_age_days
        )
        self._lock = threading.Lock()
        self._described: OrderedDict[str, _Described] = OrderedDict()
        self._opening = threading.local()  # begin() -> run() on one worker thread: the pipelined opening
        self._types: dict[tuple[int, int], str] = {}

    def _option(self, options: Mapping[str, Any], key: str, default: str) -> str:
        value = options.get(key, default)
        if not isinstance(value, str) or not _OPTION.match(value):
            raise ConfigError(f"connection {self.connection!r}: option {key} must be a lower-case identifier")
        return value

    # -- binding (no database access) ------------------------------------------------------------

    def bind(self, source: exp.Subquery, mark: GovernedMark) -> GovernedRelation:
        """Replace ``source`` by a reference to its view; the relation to create.

        Raises:
            QueryExecutionError: the governed source is not a plain SELECT.
        """
        body = source.this
        if not isinstance(body, exp.Select):
            raise QueryExecutionError(f"{self.connection!r}: a governed source must be a SELECT")
        filters_rows = body.find(exp.Where) is not None
        objects = set()
        for table in physical_tables(body):
            if not table.db:
                table.set("db", exp.to_identifier(self.schema, quoted=True))
            objects.add(".".join(part.name for part in table.parts))
        for projection in body.expressions:
            self._unsalt(projection)
        text = body.sql(dialect="postgres")
        literals = (lit.this for lit in body.find_all(exp.Literal) if lit.is_string)
        if mark.hash_salt and any(mark.hash_salt in str(value) for value in literals):  # a shape _unsalt missed
            raise QueryExecutionError(
                f"{self.connection!r}: the governed source of {mark.product} cannot be kept as a view "
                "without its hash salt in the definition; this is a bug, please report it"
            )
        name = "g_" + digest(f"{self.governed_schema}\n{self.reader}\n{text}")
        relation = GovernedRelation(mark.product, name, text, tuple(sorted(objects)), (name,), filters_rows)
        reference = exp.table_(name, db=self.governed_schema, quoted=True)
        alias = source.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            reference.set("alias", alias)
        source.replace(reference)
        return relation

    def _unsalt(self, projection: exp.Expr) -> None:
        """Replace the salt literal of a hash mask (``MD5('<salt>' || …) AS col``) by a lookup in ``salts``."""
        masked = projection.this if isinstance(projection, exp.Alias) else None
        if not (isinstance(masked, exp.MD5) and isinstance(masked.this, exp.DPipe)):
            return
        salt = masked.this.this
        if not (isinstance(salt, exp.Literal) and salt.is_string):
            return
        lookup = (
            exp.select(exp.column("salt", table="s", quoted=True))
            .from_(exp.table_("salts", db=self.governed_schema, quoted=True, alias="s"))
            .where(
                exp.EQ(
                    this=exp.column("id", table="s", quoted=True),
                    expression=exp.Literal.string(self.views.salt_id(salt.this)),
                )
            )
        )
        salt.replace(lookup.subquery())

    # -- running ---------------------------------------------------------------------------------

    def begin(self, raw: psycopg.Connection[Any], timeout_s: float, prepared: Prepared, *, superuser: bool) -> None:
        """Create missing views, then open the statement's READ ONLY transaction as the reader with its tokens.

        For a statement already described, the transaction is only made ready here: :meth:`run` opens
        it, runs the statement and rolls back in one round trip (a pipeline).
        """
        tokens = ",".join(self.views.ensure(raw, prepared.relations, timeout_s, superuser=superuser))
        opening = (  # the three settings in one statement: what SET LOCAL does, one round of parsing
            "BEGIN READ ONLY",
            f"SELECT set_config('statement_timeout', '{_ms(timeout_s)}', true),"
            f" set_config('dataproducts.bindings', '{tokens}', true), set_config('role', '{self.reader}', true)",
        )
        with self._lock:
            described = prepared.sql in self._described
        if described:
            self._opening.statements = opening
            return
        self._opening.statements = None
        raw.execute("; ".join(opening))

    def run(self, raw: psycopg.Connection[Any], prepared: Prepared, limits: Limits, deadline: Deadline) -> RowSet:
        """Run the prepared statement inside ``run()`` (in the transaction :meth:`begin` opened).

        Raises:
            QueryExecutionError: the store refused a read outside the statement's governed sources.
        """
        opening = self._opening.__dict__.pop("statements", None)
        try:
            statement = _spliced(raw, prepared) if prepared.parameters else prepared.sql
            if opening is None:
                described = self._describe(raw, prepared.sql, statement)
                with raw.cursor() as cursor:
                    cursor.execute(described.wrapped, [statement], binary=True)
                    rowset = fetch_capped(described.names, cursor.fetchmany, limits, deadline)
            else:
                described = self._describe(raw, prepared.sql, statement)  # cached: no round trip
                with raw.cursor() as cursor:
                    with raw.pipeline():
                        for setting in opening:
                            raw.execute(setting)
                        cursor.execute(described.wrapped, [statement], binary=True)
                        raw.execute("ROLLBACK")
                    rowset = fetch_capped(described.names, cursor.fetchmany, limits, deadline)
        except psycopg.Error as exc:
            if exc.sqlstate not in _REFUSALS:
                raise
            raise QueryExecutionError(
                f"{self.connection!r} refused the statement: {driver_message(exc)}; governed statements read "
                "products only through their governed sources",
                orig=exc,
            ) from exc
        rowset.objects = prepared.objects
        return rowset

    def forget(self, error: QueryExecutionError, prepared: Prepared) -> bool:
        """After a refused run: True when a view this process believed in may have been dropped since (its
        binding is forgotten, so the next attempt creates it again)."""
        if getattr(error.orig, "sqlstate", None) not in (_UNDEFINED_TABLE, UNBOUND):
            return False
        return self.views.forget(r.name for r in prepared.relations)

    def template(self, statement: exp.Query) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``statement``'s text split at its placeholders, and their names in text order.

        ``run()`` takes the statement as text, so the driver cannot bind its values: they are quoted by
        psycopg (:func:`_spliced`) between these pieces. The pieces are found by rendering each
        placeholder as a marker drawn now at random, which nothing else in the text can hold.
        """
        marker = f"dp_param_{secrets.token_hex(8)}_"
        marked = statement.copy()
        names: list[str] = []
        for placeholder in list(marked.find_all(exp.Placeholder)):
            placeholder.replace(exp.column(f"{marker}{len(names)}"))
            names.append(placeholder.name)
        pieces = re.split(f"{marker}(\\d+)", marked.sql(dialect="postgres"))
        order = tuple(names[int(i)] for i in pieces[1::2])
        if sorted(order) != sorted(names):
            raise QueryExecutionError(f"{self.connection!r}: the statement's placeholders could not be located")
        return tuple(pieces[0::2]), order

    def _describe(self, raw: psycopg.Connection[Any], key: str, statement: str) -> _Described:
        """The result columns of ``statement`` and the ``run()`` call that returns them, kept under ``key``
        (the statement's text with placeholders: one description serves all its values)."""
        with self._lock:
            hit = self._described.get(key)
            if hit is not None:
                self._described.move_to_end(key)
                return hit
        encoding = raw.info.encoding
        parsed = raw.pgconn.prepare(b"", statement.encode(encoding))  # parse analysis only: nothing runs
        if parsed.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(parsed, encoding=encoding)
        result = raw.pgconn.describe_prepared(b"")
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding=encoding)
        fields = [(result.fname(i) or b"", result.ftype(i), result.fmod(i)) for i in range(result.nfields)]
        if not fields:
            raise QueryExecutionError(f"{self.connection!r}: a governed statement must return at least one column")
        types = self._type_names(raw, [(oid, mod) for _, oid, mod in fields])
        columns = ", ".join(f'"c{i}" {t}' for i, t in enumerate(types))
        wrapped = f'SELECT * FROM "{self.governed_schema}"."run"(%s) AS "t"({columns})'
        described = _Described([name.decode(encoding) for name, _, _ in fields], wrapped)
        with self._lock:
            self._described[key] = described
            while len(self._described) > _DESCRIBED:
                self._described.popitem(last=False)
        return described

    def _type_names(self, raw: psycopg.Connection[Any], types: list[tuple[int, int]]) -> list[str]:
        with self._lock:
            unknown = sorted({t for t in types if t not in self._types})
        if unknown:
            rows = raw.execute(
                "SELECT format_type(t.oid, t.mod) FROM unnest(%s::oid[], %s::int4[]) WITH ORDINALITY AS t(oid, mod, n)"
                " ORDER BY t.n",
                [[oid for oid, _ in unknown], [mod for _, mod in unknown]],
            ).fetchall()
            with self._lock:
                self._types.update({t: str(name) for t, (name,) in zip(unknown, rows, strict=True)})
        with self._lock:
            return [self._types[t] for t in types]


def _spliced(raw: psycopg.Connection[Any], prepared: Prepared) -> str:
    """``prepared``'s text with its parameters quoted by psycopg for this connection."""
    pieces = [prepared.template[0]]
    for name, text in zip(prepared.placeholders, prepared.template[1:], strict=True):
        pieces += [psycopg.sql.Literal(prepared.parameters[name]).as_string(raw), text]
    return "".join(pieces)


def _ms(timeout_s: float) -> int:
    return max(1, round(timeout_s * 1000))
