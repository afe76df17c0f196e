"""A throwaway PostgreSQL cluster on a loopback port, started from the machine's real binaries.

Used by the test suite and by ``bench/``. Binaries come from ``$DATAPRODUCTS_PG_BINDIR``, ``pg_config
--bindir`` or Debian's ``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so
when we are root the cluster is created and run as the unprivileged ``postgres`` user (created by
Debian's package) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresCluster", "find_pg_bindir"]


def find_pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    candidates: list[str] = []
    if env := os.environ.get("DATAPRODUCTS_PG_BINDIR"):
        candidates.append(env)
    if pg_config := shutil.which("pg_config"):
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        except OSError:
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """``with PostgresCluster.start() as pg: pg.url`` — a fresh cluster, removed on exit."""

    bindir: Path
    datadir: Path
    port: int
    user: str | None  # OS user the server runs as, when we are root

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = find_pg_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL binaries not found: install Debian's postgresql-15 (apt-get install postgresql-15) "
                "or set DATAPRODUCTS_PG_BINDIR to the directory holding initdb and pg_ctl"
            )
        run_as = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="dp-pg-"))
        datadir = root / "data"
        if run_as:
            shutil.chown(root, user=run_as)
            os.chmod(root, 0o700)
        cluster = cls(bindir=bindir, datadir=datadir, port=_free_port(), user=run_as)
        cluster._run("initdb", "-D", str(datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        cluster.resume()
        return cluster

    def resume(self) -> None:
        """Start the server on this cluster's data directory and port (again, after :meth:`halt`)."""
        root = self.datadir.parent
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {root} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

    def halt(self) -> None:
        """Stop the server in immediate mode (as a crash would: no clean shutdown), keeping its data."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr or result.stdout}")

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (psycopg 3 driver)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (if running) and remove the cluster."""
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
