"""A process that loaded llama-cpp-python ends without unclosed-file ResourceWarnings.

llama-cpp-python opens two ``/dev/null`` files at import and never closes them; importing it the way
our code does (:func:`embeddings.quantize.import_llama_cpp`) closes them at exit. Warnings at
interpreter exit never reach pytest's ``filterwarnings = error``, so a child process shows them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def stderr_of(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return done.stderr


def test_importing_llama_cpp_through_our_loader_leaves_no_unclosed_file_at_exit() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert "unclosed file" in stderr_of("import llama_cpp")  # what the library alone leaves behind
    assert "ResourceWarning" not in stderr_of("from embeddings.quantize import import_llama_cpp; import_llama_cpp()")
