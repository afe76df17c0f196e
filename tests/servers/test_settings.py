from pathlib import Path

import pytest

from catalog.errors import ConfigError
from servers.settings import hash_token, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dataproducts.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "connections:\n  shop: {kind: sqlite, url: 'sqlite:///data/shop.db'}\n"
        "  lake: {kind: duckdb, files: {facts: data/facts.parquet}}\n",
    )
    settings = load_settings(config)
    shop = settings.connection("shop")
    assert shop.url is not None
    assert shop.url.get_secret_value() == f"sqlite:///{tmp_path / 'data' / 'shop.db'}"
    assert settings.connection("lake").files == {"facts": str(tmp_path / "data" / "facts.parquet")}
    assert settings.resolved_registry_url() == f"sqlite:///{tmp_path / '.dataproducts' / 'registry.db'}"


def test_environment_variables_override_the_file_with_nested_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAPRODUCTS_LIMITS__MAX_ROWS", "17")
    settings = load_settings(write(tmp_path, "limits: {max_rows: 500, timeout_s: 3}\n"))
    assert settings.limits.max_rows == 17
    assert settings.limits.timeout_s == 3


def test_env_references_pull_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_URL", "postgresql://u:secret@127.0.0.1/db")
    settings = load_settings(write(tmp_path, "connections:\n  pg: {kind: postgresql, url: {$env: PG_URL}}\n"))
    url = settings.connection("pg").url
    assert url is not None and url.get_secret_value().endswith("@127.0.0.1/db")
    assert "u:secret@" not in repr(settings)  # the password itself; field names may say "secret"


def test_a_missing_env_reference_names_the_field_and_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"connections\.pg\.url: environment variable 'NOPE_UNSET_VAR'"):
        load_settings(write(tmp_path, "connections:\n  pg: {kind: postgresql, url: {$env: NOPE_UNSET_VAR}}\n"))


def test_invalid_settings_say_which_field_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_rows"):
        load_settings(write(tmp_path, "limits: {max_rows: 0}\n"))
    with pytest.raises(ConfigError, match="unknown connection 'nope'; configured connections are"):
        load_settings(write(tmp_path, "{}\n")).connection("nope")


def test_tokens_resolve_to_principals_only_by_their_hash(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, f"principals:\n  - {{name: ana, roles: [analyst], token_sha256: {hash_token('s3cret')}}}\n")
    )
    principal = settings.principal_for_token("s3cret")
    assert principal is not None and principal.name == "ana" and principal.roles == {"analyst"}
    assert settings.principal_for_token("wrong") is None
    assert settings.principal_for_token(hash_token("s3cret")) is None


def test_hash_masking_refuses_to_run_without_a_salt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hash_salt is not set"):
        load_settings(write(tmp_path, "{}\n")).require_salt()
