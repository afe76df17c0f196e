"""An index run killed with SIGKILL mid-way: searches meanwhile see the previous index, and the next
run completes with no duplicate or orphaned chunks.

The real ``dataproducts index`` command runs in a child process with the real GGUF model; it is
killed once it has mapped the model, i.e. while it embeds (the model loads on the first batch; nothing
is written to the store before the last one).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog.principal import Principal
from servers.service import DataProductsService
from servers.settings import load_settings

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
ROWS = 200
READER = Principal(name="reader", roles=frozenset({"analyst"}))
_WORDS = (
    "parcel refund courier mug kettle grinder delay damaged invoice voucher address return label warehouse "
    "carton tape receipt colour size ceramic steel handle lid filter beans roast order customer weekend"
).split()

CONFIG = """
registry_url: sqlite:///registry.db
hash_salt: index-kill-salt
connections:
  shop: {kind: sqlite, path: shop.sqlite}
search: {kind: embedded, path: search.sqlite}
"""
CONTRACT = """
name: shop.notes
version: 1.0.0
title: Support notes
description: Free-text notes of the support team.
owner: {team: shop, email: shop@example.org}
source: {connection: shop, table: notes}
primary_key: [id]
columns:
  - {name: id, type: integer, description: Note number}
  - {name: body, type: string, description: Note text}
policy: {access: [role:analyst]}
retrieval: {text_fields: [body], chunk: {size: 400, overlap: 40}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _note(rng: random.Random, i: int, edition: str) -> str:
    return f"note{i} {edition} " + " ".join(rng.choice(_WORDS) for _ in range(18))


def _cli(workspace: Path, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    if "DATAPRODUCTS_MODELS_DIR" in os.environ:
        env["DATAPRODUCTS_MODELS_DIR"] = os.environ["DATAPRODUCTS_MODELS_DIR"]
    cmd = [
        sys.executable,
        "-c",
        "from servers.cli import main; main()",
        "--config",
        str(workspace / "dataproducts.yaml"),
        *args,
    ]
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(cmd, cwd=workspace, env=env, **streams)  # type: ignore[call-overload]


def _run(workspace: Path, *args: str) -> None:
    process = _cli(workspace, *args)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, (out + err).decode("utf-8", "replace")[-3000:]


def _embedding(pid: int) -> bool:
    """The process has mapped a GGUF model: its run reached the embedding step."""
    try:
        return ".gguf" in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _kill_mid_embedding(workspace: Path) -> None:
    """Start ``dataproducts index`` and SIGKILL it once it embeds, before it has finished."""
    process = _cli(workspace, "index", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _embedding(process.pid):
            assert process.poll() is None, "the run ended before it could be killed mid-way"
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed mid-way"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _chunks(workspace: Path) -> list[tuple[str, str, str]]:
    """(id, key, field_hash) of every chunk of shop.notes, by id."""
    with contextlib.closing(sqlite3.connect(workspace / "search.sqlite")) as conn:
        query = "SELECT id, key, field_hash FROM chunks WHERE product = 'shop.notes' ORDER BY id"
        return [tuple(r) for r in conn.execute(query)]


def _store_is_consistent(workspace: Path) -> None:
    with contextlib.closing(sqlite3.connect(workspace / "search.sqlite")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # FTS rows match chunks
        duplicates = conn.execute(
            "SELECT product, key, field, chunk, count(*) FROM chunks"
            " GROUP BY product, key, field, chunk HAVING count(*) > 1"
        ).fetchall()
        assert duplicates == []


async def test_an_index_run_killed_mid_way_leaves_the_previous_index_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    (tmp_path / "dataproducts.yaml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "notes.yaml").write_text(CONTRACT, encoding="utf-8")
    with contextlib.closing(sqlite3.connect(tmp_path / "shop.sqlite")) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, _note(rng, i, "first")) for i in range(ROWS)])
    _run(tmp_path, "register", str(tmp_path / "notes.yaml"))
    _run(tmp_path, "index")
    before = _chunks(tmp_path)
    assert len(before) == ROWS

    with contextlib.closing(sqlite3.connect(tmp_path / "shop.sqlite")) as conn, conn:  # every row changes
        conn.execute("DELETE FROM notes WHERE id < 100")
        conn.executemany("UPDATE notes SET body = ? WHERE id = ?", [(_note(rng, i, "second"), i) for i in range(ROWS)])
        conn.executemany(
            "INSERT INTO notes VALUES (?, ?)", [(i, _note(rng, i, "second")) for i in range(ROWS, ROWS + 100)]
        )
    _kill_mid_embedding(tmp_path)

    assert _chunks(tmp_path) == before  # nothing of the killed run was written
    _store_is_consistent(tmp_path)
    async with DataProductsService.open(load_settings(tmp_path / "dataproducts.yaml")) as service:
        found = await service.search_documents(READER, "note150 first", product="shop.notes", k=3)  # previous index
        assert found.hits and all(" first " in hit.text for hit in found.hits)

    _run(tmp_path, "index")
    after = _chunks(tmp_path)
    _store_is_consistent(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / "shop.sqlite")) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM notes")}
    keys = [key for _, key, _ in after]
    assert len(keys) == len(set(keys)) == len(ids)  # one chunk per row: no duplicates
    assert {int(re.sub(r"\D", "", key)) for key in keys} == ids  # no orphans of deleted rows, none missing
    with contextlib.closing(sqlite3.connect(tmp_path / "search.sqlite")) as conn:
        texts = [row[0] for row in conn.execute("SELECT text FROM chunks WHERE product = 'shop.notes'")]
    assert all(" second " in text for text in texts)
