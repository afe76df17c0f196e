"""The first hour of a new user, through the real ``dataproducts`` entry point on a real SQLite file.

A fresh workspace, a table created without declared column types, a draft contract still full of
``TODO`` placeholders: each gets a clear answer, and no expected failure prints a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from catalog.errors import ConnectorUnavailableError
from servers.cli import main
from servers.cli._common import reporting_errors

ROOT = Path(__file__).resolve().parents[2]


def dataproducts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the console-script entry point in-process: exit code and everything it printed, lines unwrapped."""
    monkeypatch.setattr(sys, "argv", ["dataproducts", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh workspace as a new user writes it: a SQLite table without column types, no .dataproducts/ yet."""
    with sqlite3.connect(tmp_path / "flights.db") as db:
        db.execute("CREATE TABLE flights (id, carrier, dep_delay, tailnum)")
        db.executemany(
            "INSERT INTO flights VALUES (?, ?, ?, ?)",
            [(i, "UA", i * 1.5 if i % 2 else i, f"N{i}" if i % 20 else i) for i in range(1, 101)],
        )
    db.close()
    (tmp_path / "dataproducts.yaml").write_text(
        "registry_url: sqlite:///.dataproducts/registry.db\nconnections:\n  air: {kind: sqlite, path: flights.db}\n",
        encoding="utf-8",
    )
    return tmp_path


def test_a_fresh_workspace_creates_its_registry_folder_on_first_use(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (workspace / ".dataproducts").exists()
    code, output = dataproducts(monkeypatch, capsys, "--config", str(workspace / "dataproducts.yaml"), "list")
    assert code == 0, output
    assert (workspace / ".dataproducts" / "registry.db").is_file()


def outside_registry(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the workspace's registry at a folder outside it that does not exist; return the file."""
    missing = tmp_path_factory.mktemp("elsewhere") / "not-there" / "registry.db"
    config = workspace / "dataproducts.yaml"
    text = config.read_text(encoding="utf-8").replace(".dataproducts/registry.db", str(missing).lstrip("/"))
    config.write_text(text.replace("sqlite:///", "sqlite:////"), encoding="utf-8")
    return missing


def test_a_registry_folder_outside_the_workspace_is_named_with_the_fix_in_one_line(
    workspace: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = outside_registry(workspace, tmp_path_factory)
    config = workspace / "dataproducts.yaml"
    contract = workspace / "flights.yaml"
    contract.write_text(FILLED, encoding="utf-8")
    for command in (["list"], ["register", str(contract)], ["history", "air.flights"], ["serve"], ["serve", "--http"]):
        code, output = dataproducts(monkeypatch, capsys, "--config", str(config), *command)
        assert code == 1, (command, output)
        assert f"cannot open the registry database '{missing}'" in output, (command, output)
        assert "does not exist; create it or set registry_url in dataproducts.yaml" in output, (command, output)
        assert "Traceback" not in output and "sqlalche.me" not in output
    assert not missing.parent.exists()  # not ours to create


def test_a_failure_inside_a_task_group_is_reported_as_its_one_cause(capsys: pytest.CaptureFixture[str]) -> None:
    def serving() -> None:  # what a server's lifespan raises when its registry cannot be opened
        raise ExceptionGroup("unhandled errors in a TaskGroup", [ConnectorUnavailableError("registry down")])

    with pytest.raises(typer.Exit):
        reporting_errors(serving)()
    assert capsys.readouterr().err == "store_unavailable: registry down\n"


def test_an_expected_failure_prints_no_traceback_unless_debug(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside_registry(workspace, tmp_path_factory)
    config = str(workspace / "dataproducts.yaml")
    command = [sys.executable, "-c", "from servers.cli import main; main()", "--config", config]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    quiet = subprocess.run([*command, "list"], capture_output=True, text=True, env=env, check=False)
    assert quiet.returncode == 1
    assert quiet.stderr.count("\n") == 1, quiet.stderr
    assert quiet.stderr.startswith("store_unavailable: cannot open the registry database")
    loud = subprocess.run([*command, "--debug", "list"], capture_output=True, text=True, env=env, check=False)
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and "unable to open database file" in loud.stderr


FILLED = """\
name: air.flights
version: 0.1.0
title: Flights
description: One row per departed flight.
owner: {team: ops}
source: {connection: air, table: flights}
columns:
  - {name: id, type: integer, description: Flight number}
  - {name: carrier, type: string, description: Carrier code}
  - {name: dep_delay, type: float, description: Departure delay in minutes}
  - {name: tailnum, type: string, description: Plane tail number}
policy:
  access: [role:analyst]
"""


def draft_of_flights(workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    draft = workspace / "draft.yaml"
    config = str(workspace / "dataproducts.yaml")
    code, output = dataproducts(
        monkeypatch, capsys, "--config", config, "init", "--connection", "air", "--table", "flights", "-o", str(draft)
    )
    assert code == 0, output
    return draft


def test_init_infers_the_types_of_undeclared_sqlite_columns_from_their_values(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = draft_of_flights(workspace, monkeypatch, capsys).read_text(encoding="utf-8")
    assert "type: bytes" not in text
    assert "- name: id\n    type: integer  # no declared type; inferred from all 100 rows\n" in text
    assert "- name: carrier\n    type: string  # no declared type; inferred from all 100 rows\n" in text
    assert (
        "- name: dep_delay\n    type: float  # no declared type; inferred from all 100 rows (integer and real values)"
        in text
    )
    assert (
        "- name: tailnum\n    type: string  # no declared type; mixed: 95 text, 5 integer in all 100 rows; check it"
        in text
    )


def test_validate_reports_each_todo_placeholder_with_its_line_and_field(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = draft_of_flights(workspace, monkeypatch, capsys)
    lines = draft.read_text(encoding="utf-8").splitlines()
    code, output = dataproducts(
        monkeypatch, capsys, "--config", str(workspace / "dataproducts.yaml"), "validate", str(draft)
    )
    assert code == 1
    todo_lines = [n for n, line in enumerate(lines, 1) if "TODO" in line.split("#")[0]]
    for number in todo_lines:
        assert f"{draft}:{number}: " in output, (number, output)
    assert f"{draft}:{todo_lines[0]}: title: placeholder left from the draft" in output
    assert "columns[3].description: placeholder left from the draft: 'TODO: describe tailnum'" in output
    assert f"{len(todo_lines)} problem(s)" in output


def test_register_refuses_a_draft_with_placeholders_unless_allowed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = draft_of_flights(workspace, monkeypatch, capsys)
    config = str(workspace / "dataproducts.yaml")
    code, output = dataproducts(monkeypatch, capsys, "--config", config, "register", str(draft))
    assert code == 1
    assert "nothing was registered: 7 TODO placeholder(s) left from `dataproducts init`" in output
    assert "--allow-draft" in output
    assert "air.flights" not in dataproducts(monkeypatch, capsys, "--config", config, "list")[1]
    code, output = dataproducts(monkeypatch, capsys, "--config", config, "register", "--allow-draft", str(draft))
    assert code == 0, output
    assert "created air.flights 0.1.0" in output


def test_a_completed_contract_on_untyped_columns_validates_and_registers(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = workspace / "flights.yaml"
    contract.write_text(FILLED, encoding="utf-8")
    config = str(workspace / "dataproducts.yaml")
    assert dataproducts(monkeypatch, capsys, "--config", config, "validate", str(contract)) == (
        0,
        f"ok {contract}: air.flights 0.1.0",
    )
    code, output = dataproducts(monkeypatch, capsys, "--config", config, "register", str(contract))
    assert code == 0, output


def test_a_registry_server_that_does_not_answer_is_one_line_without_its_password(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    config = workspace / "dataproducts.yaml"
    url = "postgresql+psycopg://dp:s3cret@127.0.0.1:1/registry"  # nothing listens on port 1
    config.write_text(f"registry_url: {url}\n", encoding="utf-8")
    code, output = dataproducts(monkeypatch, capsys, "--config", str(config), "list")
    assert code == 1
    assert output.startswith(
        "store_unavailable: cannot reach the registry database postgresql+psycopg://dp:***@127.0.0.1:1/registry"
    )
    assert "check that it is running and that registry_url in dataproducts.yaml is right" in output
    assert "s3cret" not in output and "Traceback" not in output
