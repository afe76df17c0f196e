"""The torch-free converter, on the model files the build extracted (no download here)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from catalog.errors import EmbeddingError
from embeddings.build import SAMPLE_TEXTS
from embeddings.convert import convert_bert_to_gguf, load_bert, reference_embeddings
from embeddings.llamacpp import LlamaCppEmbedder

# Token ids of the Hugging Face tokenizer (tokenizer.json of all-MiniLM-L6-v2) for these texts.
HF_TOKEN_IDS = {
    "Hello, World!": [101, 7592, 1010, 2088, 999, 102],
    "Unaffable hyperparameterisation": [101, 14477, 20961, 3468, 23760, 28689, 22828, 6648, 102],
    "Vitamin-D (25-OH) levels; p<0.05": [
        101,
        17663,
        1011,
        1040,
        1006,
        2423,
        1011,
        2821,
        1007,
        3798,
        1025,
        1052,
        1026,
        1014,
        1012,
        5709,
        102,
    ],
    "Café naïve façade": [101, 7668, 15743, 8508, 102],
    "": [101, 102],
    "東京 is big 😀": [101, 1879, 1755, 2003, 2502, 100, 102],
    "don't  stop\tbelieving\n": [101, 2123, 1005, 1056, 2644, 8929, 102],
}


@pytest.fixture(scope="module")
def f32_gguf(model_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_bert_to_gguf(model_source_dir, tmp_path_factory.mktemp("gguf") / "minilm-f32.gguf", ftype="f32")


@pytest.fixture(scope="module")
def f32_embedder(f32_gguf: Path) -> Iterator[LlamaCppEmbedder]:
    embedder = LlamaCppEmbedder(f32_gguf)
    yield embedder
    embedder.close()


def test_converted_gguf_carries_what_llamacpp_bert_expects(f32_gguf: Path) -> None:
    reader = gguf.GGUFReader(f32_gguf)
    fields = {name: field.contents() for name, field in reader.fields.items() if name != "tokenizer.ggml.tokens"}
    assert fields["general.architecture"] == "bert"
    assert fields["bert.context_length"] == 256
    assert fields["bert.embedding_length"] == 384
    assert fields["bert.block_count"] == 6
    assert fields["bert.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert fields["bert.attention.causal"] is False
    assert fields["tokenizer.ggml.model"] == "bert"
    assert fields["tokenizer.ggml.bos_token_id"] == 101
    assert fields["tokenizer.ggml.seperator_token_id"] == 102
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["position_embd.weight"].shape.tolist() == [384, 256]
    assert "pooler.dense.weight" not in tensors and len(tensors) == 5 + 6 * 16


def test_f16_keeps_norms_and_biases_in_f32(model_source_dir: Path, tmp_path: Path) -> None:
    reader = gguf.GGUFReader(convert_bert_to_gguf(model_source_dir, tmp_path / "m.gguf", ftype="f16"))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_q.bias"] == gguf.GGMLQuantizationType.F32
    assert types["token_types.weight"] == gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("text", list(HF_TOKEN_IDS))
def test_llamacpp_tokenizes_the_converted_vocab_as_the_hf_tokenizer(f32_embedder: LlamaCppEmbedder, text: str) -> None:
    assert f32_embedder.tokenize(text) == HF_TOKEN_IDS[text]


def test_numpy_reference_agrees_with_llamacpp_f32(model_source_dir: Path, f32_embedder: LlamaCppEmbedder) -> None:
    texts = list(SAMPLE_TEXTS)
    reference = reference_embeddings(load_bert(model_source_dir), [f32_embedder.tokenize(t) for t in texts])
    vectors = f32_embedder.embed_batch(texts)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)
    assert np.min(np.sum(reference * vectors, axis=1)) >= 0.999


def test_a_model_that_is_not_bert_is_refused(model_source_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    shutil.copytree(model_source_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(model_source_dir / "model.safetensors")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "roberta"}), encoding="utf-8")
    with pytest.raises(EmbeddingError, match="only 'bert' models convert"):
        convert_bert_to_gguf(folder, tmp_path / "x.gguf")


def test_a_folder_without_weights_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="config.json is missing"):
        convert_bert_to_gguf(tmp_path, tmp_path / "x.gguf")


def test_a_context_longer_than_the_positions_is_refused(model_source_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="context length 1024"):
        convert_bert_to_gguf(model_source_dir, tmp_path / "x.gguf", context_length=1024)
