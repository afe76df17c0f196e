"""Hugging Face BERT sentence-embedding model → GGUF for llama.cpp's ``bert`` architecture, plus a numpy reference.

No torch: the weights come from ``model.safetensors`` through ``safetensors.numpy`` and are written with the
``gguf`` package, in the layout llama.cpp's own converter gives a ``BertModel`` (tensor names from
``gguf.TensorNameMap``, a WordPiece vocabulary in "phantom space" form with token types, the special token ids
and ``add_*_token`` flags of the tokenizer, mean pooling, non-causal attention). The context length is what we
truncate to (256 tokens by default, as sentence-transformers does for all-MiniLM-L6-v2), and the position
embeddings are cut to it.

:func:`reference_embeddings` runs the same network in float64 numpy from the safetensors, on token ids; the
build checks quantized models against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from catalog.errors import EmbeddingError

__all__ = ["BertWeights", "FloatType", "convert_bert_to_gguf", "load_bert", "reference_embeddings"]

FloatType = Literal["f32", "f16"]
DEFAULT_CONTEXT_LENGTH = 256
_SKIPPED = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


@dataclass(frozen=True)
class BertWeights:
    """A BERT model as read from a Hugging Face folder: ``config.json`` and the float32 tensors by HF name."""

    config: dict[str, Any]
    tensors: dict[str, npt.NDArray[np.float32]]


def load_bert(model_dir: Path) -> BertWeights:
    """Read ``config.json`` and ``model.safetensors`` of a BERT model folder.

    Raises:
        EmbeddingError: a file is missing or the model is not a BERT encoder.
    """
    from safetensors.numpy import load_file

    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for path in (config_path, weights_path, model_dir / "tokenizer.json"):
        if not path.is_file():
            raise EmbeddingError(
                f"{path} is missing: a BERT model folder holds config.json, model.safetensors, tokenizer.json"
            )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise EmbeddingError(f"{config_path}: model_type is {config.get('model_type')!r}; only 'bert' models convert")
    tensors = {name.removeprefix("bert."): t.astype(np.float32) for name, t in load_file(weights_path).items()}
    return BertWeights(config=config, tensors=tensors)


def _vocab(model_dir: Path) -> tuple[list[str], list[int]]:
    """WordPiece tokens in llama.cpp's phantom-space form (``▁word``, ``##piece`` → ``piece``) and their types."""
    import gguf

    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tokenizer.get("model", {}).get("type") != "WordPiece":
        raise EmbeddingError(f"{model_dir / 'tokenizer.json'}: not a WordPiece tokenizer")
    by_id = {i: tok for tok, i in tokenizer["model"]["vocab"].items()}
    special = {t["id"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(len(by_id)):
        tok = by_id[i]
        if i in special:
            tokens.append(tok)
            types.append(int(gguf.TokenType.CONTROL))
        else:
            tokens.append(tok[2:] if tok.startswith("##") else "\u2581" + tok)
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types


def _special_ids(model_dir: Path) -> dict[str, int]:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", [])}
    missing = {"[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"} - set(ids)
    if missing:
        raise EmbeddingError(f"{model_dir / 'tokenizer.json'}: special tokens {sorted(missing)} are missing")
    return ids


def convert_bert_to_gguf(
    model_dir: Path,
    out_path: Path,
    *,
    ftype: FloatType = "f16",
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    name: str = "all-MiniLM-L6-v2",
) -> Path:
    """Write the BERT model in ``model_dir`` as a GGUF file at ``out_path`` (f32 or f16 matrices).

    Norms, biases and the token-type embeddings stay float32 in both, as llama.cpp's converter keeps them.

    Raises:
        EmbeddingError: the folder is not a convertible BERT model or the context length exceeds its positions.
    """
    import gguf

    bert = load_bert(model_dir)
    cfg = bert.config
    if not 0 < context_length <= cfg["max_position_embeddings"]:
        raise EmbeddingError(f"context length {context_length} must be within 1..{cfg['max_position_embeddings']}")
    n_layers = int(cfg["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    tokens, types = _vocab(model_dir)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(n_layers)
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if ftype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(int(cfg.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = _special_ids(model_dir)
    writer.add_bos_token_id(special["[CLS]"])  # llama.cpp's WordPiece tokenizer opens with BOS and closes with SEP
    writer.add_sep_token_id(special["[SEP]"])
    writer.add_unk_token_id(special["[UNK]"])
    writer.add_pad_token_id(special["[PAD]"])
    writer.add_mask_token_id(special["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)

    for hf_name, tensor in bert.tensors.items():
        if hf_name in _SKIPPED or hf_name.startswith("cls."):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise EmbeddingError(f"{model_dir}: tensor {hf_name!r} has no place in llama.cpp's bert architecture")
        data = tensor[:context_length] if hf_name == "embeddings.position_embeddings.weight" else tensor
        keep_f32 = ftype == "f32" or data.ndim <= 1 or gguf_name.startswith("token_types")
        writer.add_tensor(gguf_name, np.ascontiguousarray(data.astype(np.float32 if keep_f32 else np.float16)))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    return out_path


def _layer_norm(x: npt.NDArray[np.float64], w: npt.NDArray[Any], b: npt.NDArray[Any], eps: float) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: npt.NDArray[np.float64]) -> Any:
    """Exact (erf) GELU as BERT uses it; erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


def reference_embeddings(bert: BertWeights, token_ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
    """Mean-pooled, L2-normalised sentence embeddings of tokenised inputs (``[CLS] ... [SEP]``), in float64 numpy."""
    cfg = bert.config
    w = {k: v if k == "embeddings.word_embeddings.weight" else v.astype(np.float64) for k, v in bert.tensors.items()}
    heads, eps = int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12))
    out = []
    for ids in token_ids:
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][list(ids)].astype(np.float64)
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."

            def dense(h: Any, name: str, p: str = p) -> Any:
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q, k, v = (
                dense(x, f"attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                for m in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
            x = _layer_norm(
                x + dense(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            ff = dense(_gelu(dense(x, "intermediate.dense")), "output.dense")
            x = _layer_norm(x + ff, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        pooled = x.mean(0)
        out.append(pooled / np.linalg.norm(pooled))
    return np.asarray(out, dtype=np.float32).reshape(len(out), -1)
