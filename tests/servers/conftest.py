"""A registered demo workspace shared by the server tests (built once per session, offline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from catalog.loader import load_contract_file
from catalog.registry import Registry
from servers.demo import DemoWorkspace, build_demo_workspace
from servers.mcp import create_server
from servers.settings import Settings, load_settings


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoWorkspace:
    workspace = build_demo_workspace(tmp_path_factory.mktemp("demo") / "ws")
    settings = load_settings(workspace.config_path)
    registry = Registry.from_url(settings.resolved_registry_url())
    try:
        for path in workspace.contract_paths:
            for contract in load_contract_file(path):
                registry.register(contract, actor="tests")
    finally:
        registry.close()
    return workspace


@pytest.fixture
def settings(demo: DemoWorkspace) -> Settings:
    return load_settings(demo.config_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(settings: Settings, principal: str) -> Client:
    """An in-process MCP client acting as ``principal``."""
    return Client(create_server(settings, principal=settings.principal(principal)))


@pytest.fixture
async def ana(settings: Settings) -> AsyncIterator[Client]:
    """Analyst with role sales-eu: masked PII, EU orders only."""
    async with client_for(settings, "ana") as client:
        yield client


@pytest.fixture
async def sam(settings: Settings) -> AsyncIterator[Client]:
    """Analyst with pii-reader and sales: raw PII, all orders."""
    async with client_for(settings, "sam") as client:
        yield client


def demo_path(demo: DemoWorkspace, *parts: str) -> Path:
    return demo.path.joinpath(*parts)
