"""The governed schema of a PostgreSQL connection: its views, bindings and salts, and the reader role.

Everything here runs as the connection's login in a short READ WRITE transaction, under an advisory
lock so that processes sharing the database do not race: on a process's first governed statement the
reader role, the schema, its two owner-only tables (``salts``, ``bindings``) and its two functions
(``bound``, ``run``) are checked and created where the login may (else a :class:`ConfigError` lists
what a DBA must run); then each view a statement needs and this process has not seen is created
unless another process did, and its token read. See :mod:`connectors._pg_wall` for why each piece
exists.

Views are named by a digest of their body, so they follow the registry by construction: a new
contract version or another principal's governance is another view, and nothing is ever altered.
Old views are dropped lazily: whenever a process creates a view, the same transaction drops the views
created more than ``max_age_days`` ago (skipping one that is in use: a 100 ms lock timeout). A process
still holding a dropped view's token gets "relation does not exist" or "not bound" on its next use,
forgets the token and creates the view again (one retry, in the connector).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql as pgsql

from catalog.errors import ConfigError, QueryExecutionError
from connectors._common import driver_message
from connectors.base import GovernedRelation

__all__ = ["UNBOUND", "GovernedViews"]

UNBOUND = "DP001"  # SQLSTATE raised by bound() for a view the transaction holds no token for
_SALT_ROUNDS = 10_000
_STATE = """
SELECT current_user, r.rolsuper, r.rolcreaterole, has_database_privilege(current_database(), 'CREATE'),
       n.oid IS NOT NULL, COALESCE(n.nspowner = r.oid, false),
       d.oid IS NOT NULL, COALESCE(d.rolcanlogin OR d.rolsuper OR d.rolbypassrls, false),
       COALESCE(pg_has_role(r.oid, d.oid, 'MEMBER'), false)
FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = %(schema)s LEFT JOIN pg_roles d ON d.rolname = %(reader)s
WHERE r.rolname = current_user
"""
# PARALLEL SAFE: one parallel-unsafe function anywhere in a query rules out parallel plans (measured:
# TPC-H Q1 lost its Gather); bound() only reads a table and a setting, which parallel workers share.
_BOUND = """
CREATE OR REPLACE FUNCTION {schema}.bound(target name) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM {schema}.bindings b WHERE b.view_name = target
             AND b.token = ANY (string_to_array(current_setting('dataproducts.bindings', true), ','))) THEN
    RETURN true;
  END IF;
  RAISE EXCEPTION 'governed view % is not bound to this statement', target USING ERRCODE = '{unbound}',
    HINT = 'governed statements read only the governed sources they were compiled with';
END $fn$
"""
_RUN = """
CREATE OR REPLACE FUNCTION {schema}.run(statement text) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN RETURN QUERY EXECUTE statement; END $fn$
"""


class GovernedViews:
    """The views, tokens and salts of one governed schema, as seen by one connector (thread-safe)."""

    def __init__(self, connection: str, *, schema: str, reader: str, max_age_days: float) -> None:
        self.connection = connection
        self.governed_schema = schema
        self.reader = reader
        self.max_age_days = max_age_days
        self._lock = threading.Lock()
        self._salt_ids: dict[str, str] = {}  # salt -> fingerprint
        self._salts: dict[str, str] = {}  # fingerprint -> salt
        self._tokens: dict[str, str] = {}  # view -> token
        self._ready = False  # schema, role and functions checked by this process

    def salt_id(self, salt: str) -> str:
        """The id under which ``salt`` is stored in ``salts`` (stored with the next view created)."""
        with self._lock:
            known = self._salt_ids.get(salt)
        if known is None:
            known = _fingerprint(salt)
            with self._lock:
                self._salt_ids[salt] = known
                self._salts[known] = salt
        return known

    def forget(self, names: Iterable[str]) -> bool:
        """Forget the tokens of ``names``; True when any was known."""
        with self._lock:
            known = {name for name in names if name in self._tokens}  # a statement may read one view twice
            for name in known:
                del self._tokens[name]
        return bool(known)

    def ensure(
        self, raw: psycopg.Connection[Any], relations: Iterable[GovernedRelation], timeout_s: float, *, superuser: bool
    ) -> list[str]:
        """The tokens of ``relations``' views, creating the missing views first.

        Raises:
            ConfigError: the login may not set up the schema or the reader role (the message says what a
                DBA must run), or the reader could read a physical table directly.
            QueryExecutionError: a view cannot be created (e.g. its table does not exist).
        """
        relations = list(relations)
        with self._lock:
            known = {r.name: self._tokens[r.name] for r in relations if r.name in self._tokens}
            ready = self._ready
        missing = [r for r in relations if r.name not in known]
        if not missing:
            return [known[r.name] for r in relations]
        raw.execute(f"BEGIN READ WRITE; SET LOCAL statement_timeout = {_ms(timeout_s)}")
        try:
            raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"dataproducts:{self.governed_schema}"])
            if not ready:
                self._setup(raw, superuser=superuser)
            with self._lock:
                salts = list(self._salts.items())
            for salt_id, salt in salts:
                raw.execute(
                    pgsql.SQL("INSERT INTO {}.salts VALUES (%s, %s) ON CONFLICT (id) DO NOTHING").format(
                        pgsql.Identifier(self.governed_schema)
                    ),
                    [salt_id, salt],
                )
            tokens = {r.name: self._view(raw, r) for r in missing}
            self._drop_old(raw, keep={r.name for r in missing})
            raw.execute("COMMIT")
        except BaseException:
            if not raw.closed:
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
            raise
        with self._lock:
            self._tokens.update(tokens)
            self._ready = True
        known.update(tokens)
        return [known[r.name] for r in relations]

    def _setup(self, raw: psycopg.Connection[Any], *, superuser: bool) -> None:
        """Check (and where the login may, create) the reader role, the schema, its tables and functions.

        Raises:
            ConfigError: the login cannot create or use them; the message lists what a DBA must run.
        """
        row = raw.execute(_STATE, {"schema": self.governed_schema, "reader": self.reader}).fetchone()
        assert row is not None
        login, _, createrole, create_schema, schema_exists, schema_owned, reader_exists, reader_powerful, member = row
        schema, reader = pgsql.Identifier(self.governed_schema), pgsql.Identifier(self.reader)
        if reader_powerful:
            raise ConfigError(
                f"connection {self.connection!r}: role {self.reader!r} must be NOLOGIN, NOSUPERUSER and NOBYPASSRLS; "
                "it is the role governed statements run as"
            )
        if not reader_exists and not (superuser or createrole):
            raise self._dba_error(login, f"role {self.reader!r} does not exist")
        if not reader_exists:  # roles are cluster-wide: another database's process may create it meanwhile
            raw.execute("SAVEPOINT dataproducts_role")
            try:
                raw.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(reader))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                raw.execute("ROLLBACK TO SAVEPOINT dataproducts_role")
        if not (member or superuser):
            if not createrole:
                raise self._dba_error(login, f"login {login!r} cannot SET ROLE {self.reader!r}")
            raw.execute(pgsql.SQL("GRANT {} TO {}").format(reader, pgsql.Identifier(login)))
        if not schema_exists and not (create_schema or superuser):
            raise self._dba_error(login, f"schema {self.governed_schema!r} does not exist")
        if not schema_exists:
            raw.execute(pgsql.SQL("CREATE SCHEMA {}").format(schema))
        elif not (schema_owned or superuser):
            raise self._dba_error(login, f"schema {self.governed_schema!r} belongs to another role")
        for statement in (
            "CREATE TABLE IF NOT EXISTS {schema}.salts (id text PRIMARY KEY, salt text NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {schema}.bindings (view_name name PRIMARY KEY, token text NOT NULL,"
            " created timestamptz NOT NULL DEFAULT now())",
            "REVOKE ALL ON {schema}.salts, {schema}.bindings FROM PUBLIC",
            _BOUND,
            "REVOKE ALL ON FUNCTION {schema}.bound(name) FROM PUBLIC",
            "GRANT EXECUTE ON FUNCTION {schema}.bound(name) TO {reader}",
            "GRANT USAGE ON SCHEMA {schema} TO {reader}",
            _RUN,
            "REVOKE ALL ON FUNCTION {schema}.run(text) FROM PUBLIC",
            # the reader may own run() only while it can create in the schema (a rule of ALTER ... OWNER)
            "GRANT CREATE ON SCHEMA {schema} TO {reader}",
            "ALTER FUNCTION {schema}.run(text) OWNER TO {reader}",
            "REVOKE CREATE ON SCHEMA {schema} FROM {reader}",
        ):
            raw.execute(pgsql.SQL(statement).format(schema=schema, reader=reader, unbound=pgsql.SQL(UNBOUND)))

    def _dba_error(self, login: str, problem: str) -> ConfigError:
        return ConfigError(
            f"connection {self.connection!r}: {problem}, so the store cannot enforce governance. Ask a DBA to run: "
            f"CREATE ROLE {self.reader} NOLOGIN; GRANT {self.reader} TO {login}; "
            f"CREATE SCHEMA IF NOT EXISTS {self.governed_schema} AUTHORIZATION {login}; "
            "(or name other ones in the connection's options: reader_role, governed_schema)"
        )

    def _view(self, raw: psycopg.Connection[Any], relation: GovernedRelation) -> str:
        """The token of ``relation``'s view, creating the view first when it does not exist.

        Raises:
            ConfigError: the reader role can read a physical table of the view directly, or the login cannot.
        """
        schema, reader = pgsql.Identifier(self.governed_schema), pgsql.Identifier(self.reader)
        view = pgsql.Identifier(self.governed_schema, relation.name)
        qualified = f'"{self.governed_schema}"."{relation.name}"'
        row = raw.execute(
            pgsql.SQL("SELECT token, to_regclass(%s) IS NOT NULL FROM {}.bindings WHERE view_name = %s").format(schema),
            [qualified, relation.name],
        ).fetchone()
        if row is not None and row[1]:
            return str(row[0])
        names = {_quoted(name): name for name in relation.objects}
        exposed = raw.execute(
            "SELECT n, has_any_column_privilege(%s, c.oid, 'SELECT'), has_any_column_privilege(c.oid, 'SELECT')"
            " FROM unnest(%s::text[]) AS n JOIN pg_class c ON c.oid = to_regclass(n)",
            [self.reader, list(names)],
        ).fetchall()
        for quoted, reader_reads, login_reads in exposed:
            name = names[quoted]
            if reader_reads:
                raise ConfigError(
                    f"connection {self.connection!r}: role {self.reader!r} can read {name} directly (a grant to it or "
                    f"to PUBLIC), so the store cannot enforce governance over it; revoke that grant"
                )
            if not login_reads:
                raise ConfigError(f"connection {self.connection!r}: the login cannot read {name}; grant it SELECT")
        raw.execute(pgsql.SQL("DELETE FROM {}.bindings WHERE view_name = %s").format(schema), [relation.name])
        raw.execute(pgsql.SQL("DROP VIEW IF EXISTS {}").format(view))
        try:
            raw.execute(
                pgsql.SQL("CREATE VIEW {} {}AS SELECT * FROM (").format(
                    view, pgsql.SQL("WITH (security_barrier) " if relation.filters_rows else "")
                )
                + pgsql.SQL(relation.body)
                + pgsql.SQL(") AS governed WHERE {}.bound({})").format(schema, pgsql.Literal(relation.name))
            )
        except psycopg.Error as exc:
            raise QueryExecutionError(
                f"{self.connection!r} cannot create the governed view of {relation.product}: {driver_message(exc)}",
                orig=exc,
            ) from exc
        raw.execute(pgsql.SQL("GRANT SELECT ON {} TO {}").format(view, reader))
        token = secrets.token_hex(16)
        raw.execute(
            pgsql.SQL("INSERT INTO {}.bindings (view_name, token) VALUES (%s, %s)").format(schema),
            [relation.name, token],
        )
        return token

    def _drop_old(self, raw: psycopg.Connection[Any], *, keep: set[str]) -> None:
        """Drop views created more than ``max_age_days`` ago; one that is in use stays (lock timeout)."""
        schema = pgsql.Identifier(self.governed_schema)
        old = raw.execute(
            pgsql.SQL("SELECT view_name FROM {}.bindings WHERE created < now() - make_interval(secs => %s)").format(
                schema
            ),
            [self.max_age_days * 86400],
        ).fetchall()
        for (name,) in old:
            if name in keep:
                continue
            raw.execute("SAVEPOINT dataproducts_drop; SET LOCAL lock_timeout = 100")
            try:
                raw.execute(pgsql.SQL("DROP VIEW IF EXISTS {}").format(pgsql.Identifier(self.governed_schema, name)))
                raw.execute(pgsql.SQL("DELETE FROM {}.bindings WHERE view_name = %s").format(schema), [name])
                raw.execute("RELEASE SAVEPOINT dataproducts_drop")
            except psycopg.errors.LockNotAvailable:
                raw.execute("ROLLBACK TO SAVEPOINT dataproducts_drop")


def _fingerprint(salt: str) -> str:
    """A salt's id in ``salts``: PBKDF2, so testing guesses against it costs more than against a masked value."""
    return hashlib.pbkdf2_hmac("sha256", salt.encode("utf-8"), b"dataproducts salt id", _SALT_ROUNDS).hex()[:32]


def _quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _ms(timeout_s: float) -> int:
    return max(1, round(timeout_s * 1000))
