"""Quantize a GGUF model with llama.cpp's own quantizer, through llama-cpp-python.

Q8_0 is the default for the embedding model (cosine ≥ 0.99 to the float model); Q4_K_M, Q5_K_M and Q4_0 are
there on request. For the k-quants llama.cpp falls back to a legacy type on the tensors whose rows are not a
multiple of 256 (all-MiniLM's 384-wide matrices), so they shrink less than their name suggests.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

from catalog.errors import EmbeddingError

__all__ = ["QUANT_TYPES", "Quant", "quantize_gguf"]

Quant = Literal["Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"]
QUANT_TYPES: tuple[str, ...] = get_args(Quant)
_FTYPE_NAMES = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}


_GGML_LOG_ERROR = 4  # enum ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_log = logging.getLogger("embeddings.llama_cpp")
_log_callback: Any = None


def _close_null_files_at_exit(llama_cpp: Any) -> None:
    """Close the two ``/dev/null`` files llama-cpp-python opens at import and never closes.

    It uses them only while loading a model (to silence llama.cpp), never at exit; left open, each
    ends the process with an unclosed-file ``ResourceWarning``.
    """
    utils = getattr(llama_cpp, "_utils", None)
    for name in ("outnull_file", "errnull_file"):
        file = getattr(utils, name, None)
        if file is not None and hasattr(file, "close"):
            atexit.register(file.close)


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, with llama.cpp's own log reduced to its errors (sent to Python logging).

    Raises:
        EmbeddingError: llama-cpp-python is not installed.
    """
    global _log_callback
    try:
        import llama_cpp
    except ImportError as exc:
        raise EmbeddingError("llama-cpp-python is not installed: pip install 'dataproducts[models]'") from exc
    if _log_callback is None:
        _close_null_files_at_exit(llama_cpp)

        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            if level == _GGML_LOG_ERROR:
                _log.error("%s", text.decode("utf-8", errors="replace").rstrip())

        llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
        _log_callback = forward  # the C side keeps only a pointer: keep the callback alive
    return llama_cpp


def quantize_gguf(source: Path, target: Path, quant: str = "Q8_0", *, n_threads: int | None = None) -> Path:
    """Write ``source`` (an f16/f32 GGUF) quantized to ``quant`` at ``target``; returns ``target``.

    Raises:
        EmbeddingError: unknown quantization, llama-cpp-python missing, or llama.cpp's quantizer fails.
    """
    if quant not in _FTYPE_NAMES:
        raise EmbeddingError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    if not source.is_file():
        raise EmbeddingError(f"GGUF file {source} does not exist")
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPE_NAMES[quant])
    params.nthread = n_threads or os.cpu_count() or 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise EmbeddingError(f"llama.cpp could not quantize {source} to {quant} (status {status})")
    tmp.replace(target)
    return target
