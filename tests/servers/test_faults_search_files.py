"""The search store file or a model file missing or damaged: a clear error naming the file and the
command that fixes it, and every other tool keeps working. Real store, real GGUF model."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.contract import ProductContract
from catalog.errors import DataProductsError
from catalog.query import Query
from servers.service import DataProductsService
from tests.servers.fault_workspace import READER, open_service, sqlite_source

pytestmark = pytest.mark.anyio

NOTES = [(1, "The parcel arrived with a crushed box and a broken mug."), (2, "Refunds take five working days.")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _notes_contract() -> ProductContract:
    return ProductContract.model_validate(
        yaml.safe_load("""
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
retrieval: {text_fields: [body], chunk: {size: 200, overlap: 20}}
""")
    )


def _service(tmp_path: Path, **models: Any) -> DataProductsService:
    """A service over the workspace in ``tmp_path`` (its data and contracts made on first use)."""
    path = tmp_path / "shop.sqlite"
    if path.exists():
        source = {"kind": "sqlite", "path": str(path)}
    else:
        source = sqlite_source(path)
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            conn.executemany("INSERT INTO notes VALUES (?, ?)", NOTES)
        conn.close()
    settings: dict[str, Any] = {"search": {"kind": "embedded", "path": "search.sqlite"}}
    if models:
        settings["models"] = models
    service = open_service(tmp_path, source, settings=settings)
    service.registry.register(_notes_contract(), actor="tests")
    return service


async def _failure(call: Any) -> DataProductsError:
    with pytest.raises(DataProductsError) as info:
        await call
    return info.value


async def _other_tools_work(service: DataProductsService) -> None:
    assert (await service.query_product(READER, "shop.orders", Query())).row_count == 3
    assert (await service.run_sql(READER, "SELECT count(*) AS n FROM shop.notes")).rows == [[2]]
    assert (await service.describe_product(READER, "shop.notes")).name == "shop.notes"
    found = await service.search_products(READER, "support notes")  # keywords alone, no store nor model
    assert [p.name for p in found.products][:1] == ["shop.notes"]


@pytest.fixture
async def indexed(tmp_path: Path) -> Path:
    """A workspace whose notes are indexed by the real model; returns the store file."""
    async with _service(tmp_path) as service:
        await service.index_products()
        hits = await service.search_documents(READER, "broken mug", product="shop.notes")
        assert hits.hits
    return tmp_path / "search.sqlite"


def _remove(store: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)


async def test_a_damaged_search_store_names_the_file_and_the_fix(tmp_path: Path, indexed: Path) -> None:
    _remove(indexed)
    indexed.write_bytes(b"this is no SQLite database at all\n" * 200)
    async with _service(tmp_path) as service:
        error = await _failure(service.search_documents(READER, "broken mug"))
        assert error.code == "store_unavailable"
        assert str(indexed) in error.message and "not a database" in error.message
        assert "move it away and run `dataproducts index`" in error.message
        await _other_tools_work(service)
    indexed.rename(tmp_path / "search.damaged")  # the fix the message gives
    async with _service(tmp_path) as service:
        await service.index_products()
        assert (await service.search_documents(READER, "broken mug")).hits


async def test_a_missing_search_store_names_the_file_and_the_index_command(tmp_path: Path, indexed: Path) -> None:
    _remove(indexed)
    async with _service(tmp_path) as service:
        error = await _failure(service.search_documents(READER, "broken mug", product="shop.notes"))
        assert error.code == "not_found"
        assert str(indexed) in error.message and "run `dataproducts index shop.notes`" in error.message
        error = await _failure(service.search_documents(READER, "broken mug"))
        assert "holds no index of shop.notes" in error.message  # the one searchable product
        await _other_tools_work(service)
        await service.index_products()  # the fix the message gives
        assert (await service.search_documents(READER, "broken mug")).hits


async def test_a_missing_model_names_it_and_the_build_command(tmp_path: Path, indexed: Path) -> None:
    async with _service(tmp_path, embedding="no-such-model-q8_0") as service:
        error = await _failure(service.search_documents(READER, "broken mug"))
        assert error.code == "embedding_failed"
        assert "'no-such-model-q8_0' is not built in" in error.message
        assert "`dataproducts models build`" in error.message
        await _other_tools_work(service)


@pytest.mark.parametrize("damage", ["junk", "truncated"])
async def test_a_damaged_model_file_names_it_and_the_build_command(tmp_path: Path, indexed: Path, damage: str) -> None:
    from embeddings.models import default_models_dir

    model = tmp_path / "damaged.gguf"
    if damage == "junk":
        model.write_bytes(b"GGUF" + b"\0" * 4000)
    else:
        with (default_models_dir() / "all-minilm-l6-v2-q8_0.gguf").open("rb") as real:
            model.write_bytes(real.read(2_000_000))
    async with _service(tmp_path, embedding=str(model)) as service:
        error = await _failure(service.search_documents(READER, "broken mug"))
        assert error.code == "embedding_failed"
        assert str(model) in error.message and "`dataproducts models build`" in error.message
        await _other_tools_work(service)
