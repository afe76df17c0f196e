"""A SQLite registry locked by another writer, or out of space: calls fail closed, the file stays intact.

Locked: a second real connection holds the write lock; registrations and audit rows wait for the
busy timeout, then fail with ``unavailable`` (nothing served, nothing changed). Out of space: a
child process whose file-size limit (``RLIMIT_FSIZE``) forbids any write registers and serves;
both fail with ``unavailable``. Afterwards ``PRAGMA integrity_check`` passes and every row is there.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from catalog.errors import DataProductsError
from catalog.query import Query
from catalog.registry import Registry
from servers.mcp import create_server
from tests.servers.fault_workspace import READER, contract, open_service, sqlite_source

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _intact(path: Path) -> tuple[str, list[str], int]:
    """integrity_check's answer, the registered versions and the number of audit rows."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        versions = [r[0] for r in conn.execute("SELECT version FROM dp_product_versions ORDER BY seq")]
        audited = conn.execute("SELECT count(*) FROM dp_audit").fetchone()[0]
    return check, versions, audited


async def _outcome(call: object) -> DataProductsError | None:
    try:
        await call  # type: ignore[misc]
    except DataProductsError as exc:
        return exc
    return None


async def test_a_registry_locked_by_another_writer_fails_closed_and_stays_intact(tmp_path: Path) -> None:
    service = open_service(tmp_path, sqlite_source(tmp_path / "shop.sqlite"))
    path = tmp_path / "registry.db"
    async with service:
        await service.query_product(READER, "shop.orders", Query())
        before = _intact(path)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        try:
            found: dict[str, DataProductsError | None] = {}

            async def register() -> None:
                found["register"] = await _outcome(
                    anyio.to_thread.run_sync(lambda: service.registry.register(contract("1.1.0"), actor="tests"))
                )

            async def query() -> None:
                found["query"] = await _outcome(service.query_product(READER, "shop.orders", Query()))

            async with anyio.create_task_group() as group:  # both wait out the one busy timeout
                group.start_soon(register)
                group.start_soon(query)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        register_error, query_error = found["register"], found["query"]
        assert register_error is not None and register_error.code == "unavailable"
        assert f"registry database sqlite:///{path} is locked by another writer" in register_error.message
        assert "retry" in register_error.message
        assert query_error is not None and query_error.code == "unavailable"  # read, but not served: no audit row
        assert query_error.message.startswith("could not write the audit record of query_product by reader")
        assert "is locked by another writer" in query_error.message and "nothing was served" in query_error.message
        assert _intact(path) == before
        await service.query_product(READER, "shop.orders", Query())  # the lock is gone: served again
    assert _intact(path) == ("ok", ["1.0.0"], before[2] + 1)


_OUT_OF_SPACE = """
import json, resource, signal, sys
import anyio
from catalog.errors import DataProductsError
from catalog.query import Query
from servers.service import DataProductsService
from servers.settings import Settings
from catalog.registry import Registry
from catalog.audit import AuditLog
from tests.servers.fault_workspace import READER, contract

workspace = sys.argv[1]
settings = Settings(
    workspace=workspace,
    registry_url=f"sqlite:///{workspace}/registry.db",
    hash_salt="fault-salt",
    connections={"shop": {"kind": "sqlite", "path": f"{workspace}/shop.sqlite"}},
)
registry = Registry.from_url(settings.resolved_registry_url())
service = DataProductsService(settings, registry, AuditLog.from_registry(registry))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

async def main():
    found = {}
    for name, call in (
        ("register", lambda: anyio.to_thread.run_sync(lambda: registry.register(contract("1.1.0"), actor="t"))),
        ("query", lambda: service.query_product(READER, "shop.orders", Query())),
    ):
        try:
            await call()
            found[name] = ["ok", ""]
        except DataProductsError as exc:
            found[name] = [exc.code, exc.message]
    await service.aclose()
    print(json.dumps(found))

anyio.run(main)
"""


async def test_a_registry_out_of_space_fails_closed_and_stays_intact(tmp_path: Path) -> None:
    service = open_service(tmp_path, sqlite_source(tmp_path / "shop.sqlite"))
    path = tmp_path / "registry.db"
    async with service:
        await service.query_product(READER, "shop.orders", Query())
    before = _intact(path)
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_SPACE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["register"][0] == "unavailable", found
    assert f"registry database sqlite:///{path}" in found["register"][1]
    assert "failed to write to disk" in found["register"][1] or "is out of space" in found["register"][1]
    assert "free some space" in found["register"][1]
    assert found["query"][0] == "unavailable", found  # the audit row could not be written: not served
    assert "nothing was served" in found["query"][1]
    assert _intact(path) == before
    with Registry.from_url(f"sqlite:///{path}") as registry:  # room again: registers
        assert registry.register(contract("1.1.0"), actor="tests").status == "new_version"
    assert _intact(path) == ("ok", ["1.0.0", "1.1.0"], before[2])


async def test_a_tool_call_whose_audit_row_fails_waits_for_the_locked_registry_once(tmp_path: Path) -> None:
    """The MCP layer writes a refusal row only for calls no use case audited: a call that failed because
    its own row could not be written gets no second attempt on the same locked database."""
    service = open_service(tmp_path, sqlite_source(tmp_path / "shop.sqlite"))
    path = tmp_path / "registry.db"
    submitted: list[str] = []
    submit, lead = service.audit.submit, service.audit.lead

    def counting(write: Any) -> Any:
        def counted(rec: Any) -> Any:
            submitted.append(rec.tool)
            return write(rec)

        return counted

    service.audit.submit = counting(submit)  # type: ignore[method-assign]
    service.audit.lead = counting(lead)  # type: ignore[method-assign]  # the row led from the statement's thread
    async with service:
        server = create_server(service.settings, principal=READER, service=service)
        async with Client(server) as client:
            assert not (await client.call_tool("query_product", {"product": "shop.orders"})).is_error
            before = _intact(path)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            submitted.clear()
            try:
                result = await client.call_tool("query_product", {"product": "shop.orders"})
            finally:
                holder.execute("ROLLBACK")
                holder.close()
    assert result.is_error
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert text.startswith("unavailable: could not write the audit record of query_product")
    assert submitted == ["query_product"]  # one row attempted, not a second refusal row
    assert _intact(path) == before
