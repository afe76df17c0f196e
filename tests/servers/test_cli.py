"""The ``dataproducts`` command line, run in-process on a registered demo workspace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from typer.testing import CliRunner

from catalog.audit import AuditLog, AuditRecord, digest_args
from catalog.registry import Registry
from servers.cli import app
from servers.demo import DemoWorkspace
from servers.settings import load_settings

runner = CliRunner()


def run(demo: DemoWorkspace, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(demo.config_path), *args])
    return result.exit_code, result.output


def contract_text(demo: DemoWorkspace, name: str) -> str:
    return (demo.path / "contracts" / f"{name}.yaml").read_text(encoding="utf-8")


def test_validate_accepts_the_demo_contracts_against_their_live_sources(demo: DemoWorkspace) -> None:
    code, output = run(demo, "validate", *map(str, demo.contract_paths))
    assert code == 0, output
    assert sum(line.startswith("ok ") for line in output.splitlines()) == len(demo.contract_paths)


def test_validate_reports_every_problem_with_file_line_and_what_would_be_valid(
    demo: DemoWorkspace, tmp_path: Path
) -> None:
    text = contract_text(demo, "shop.orders")
    broken = text.replace("type: integer", "type: int", 1).replace("version: 1.0.0", "version: '1.0'", 1)
    path = tmp_path / "orders.yaml"
    path.write_text(broken, encoding="utf-8")
    code, output = run(demo, "validate", str(path))
    assert code == 1
    assert f"{path}:" in output and "columns[" in output
    assert "string" in output and "integer" in output  # the allowed types are listed
    assert "version" in output and "2 problem(s)" in output


def test_validate_names_the_real_source_columns_when_a_declared_one_is_missing(
    demo: DemoWorkspace, tmp_path: Path
) -> None:
    text = contract_text(demo, "shop.orders").replace("name: channel", "name: chanel", 1)
    path = tmp_path / "orders.yaml"
    path.write_text(text, encoding="utf-8")
    code, output = run(demo, "validate", str(path))
    assert code == 1
    assert "chanel" in output and "channel" in output


def test_register_is_idempotent_and_refuses_breaking_changes_without_a_major_bump(
    demo: DemoWorkspace, tmp_path: Path
) -> None:
    code, output = run(demo, "register", str(demo.path / "contracts" / "shop.orders.yaml"))
    assert code == 0 and "unchanged" in output
    text = contract_text(demo, "shop.orders")
    dropped = "\n".join(line for line in text.splitlines() if "name: channel" not in line)
    path = tmp_path / "orders.yaml"
    path.write_text(dropped.replace("version: 1.0.0", "version: 1.1.0"), encoding="utf-8")
    code, output = run(demo, "register", "--no-live", str(path))
    assert code == 1 and "2.0.0" in output
    code, output = run(demo, "show", "shop.orders")
    assert "name: channel" in output and "version: 1.0.0" in output


def test_list_show_history_and_audit_print_what_the_registry_holds(demo: DemoWorkspace) -> None:
    code, output = run(demo, "list")
    assert code == 0 and "shop.customers" in output
    code, output = run(demo, "history", "shop.customers")
    assert code == 0 and "registered" in output
    code, output = run(demo, "audit", "--json", "--limit", "5")
    assert code == 0


def test_init_drafts_a_contract_from_the_live_schema_with_pii_candidates(demo: DemoWorkspace) -> None:
    code, output = run(demo, "init", "--connection", "shop", "--table", "customers", "--name", "shop.people")
    assert code == 0, output
    assert "name: shop.people" in output and "email" in output and "PII candidate" in output


def test_unknown_products_and_connections_exit_with_one_actionable_line(demo: DemoWorkspace) -> None:
    code, output = run(demo, "show", "shop.ordrs")
    assert code == 1 and "shop.orders" in output
    code, output = run(demo, "init", "--connection", "nope", "--table", "x")
    assert code == 1 and "configured connections are" in output


@pytest.mark.anyio
async def test_serve_over_stdio_acts_as_the_configured_stdio_principal(demo: DemoWorkspace) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "from servers.cli import main; main()", "--config", str(demo.config_path), "serve"],
    )
    async with Client(params) as client:
        result = await client.call_tool(
            "query_product", {"product": "shop.customers", "columns": ["email"], "limit": 3}
        )
        assert not result.is_error, result.content
        assert result.structured_content is not None
        assert result.structured_content["masked_columns"] == ["email"]  # stdio_principal is ana


def test_audit_shows_the_objects_each_statement_touched(demo: DemoWorkspace) -> None:
    settings = load_settings(demo.config_path)
    with Registry.from_url(settings.resolved_registry_url()) as registry:
        row = AuditRecord(
            principal="cli-objects-probe",
            tool="run_sql",
            args_digest=digest_args({}),
            latency_ms=1.0,
            outcome="ok",
            objects=["main.orders", "main.customers"],
        )
        AuditLog.from_registry(registry).record(row)
    code, output = run(demo, "audit", "--principal", "cli-objects-probe", "--json")
    assert code == 0 and json.loads(output)["objects"] == ["main.orders", "main.customers"]
    wide = runner.invoke(
        app, ["--config", str(demo.config_path), "audit", "--principal", "cli-objects-probe"], env={"COLUMNS": "200"}
    )
    assert wide.exit_code == 0 and "main.orders, main.customers" in wide.output
