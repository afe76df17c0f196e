"""Runtime CPU dispatch: the chosen ggml CPU variant is probed, loaded and logged; one that fails is never chosen.

Real library and real model: each probe is a child process that loads a variant file from the installed
llama-cpp-python and embeds one text with the built all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.errors import EmbeddingError
from embeddings._cpu_backend import choose_variant, variant_files, variant_name

REPO = Path(__file__).resolve().parents[2]
SIGILL_ON_LOAD = r"""
#include <signal.h>
__attribute__((constructor)) static void die(void) { raise(SIGILL); }
int ggml_backend_score(void) { return 1 << 20; }
"""


@pytest.fixture(scope="module")
def variants() -> list[Path]:
    """The CPU variant files of the installed llama-cpp-python, best first."""
    import llama_cpp

    found = variant_files(Path(llama_cpp.__file__).resolve().parent / "lib")
    if not found:
        pytest.skip("this llama-cpp-python links its CPU backend in (built without GGML_CPU_ALL_VARIANTS)")
    return found


@pytest.fixture(scope="module")
def portable(variants: list[Path]) -> Path:
    """A variant every x86-64 CPU runs (the plain x64 one), else the last (least demanding) one."""
    return next((v for v in variants if variant_name(v) == "x64"), variants[-1])


def test_a_model_load_chooses_a_variant_logs_it_and_caches_the_verdict(variants: list[Path], tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(name)s %(message)s')\n"
        "from embeddings._cpu_backend import loaded_cpu_backend\n"
        "from embeddings.llamacpp import LlamaCppEmbedder\n"
        "from embeddings.models import DEFAULT_EMBEDDING_MODEL, resolve_model\n"
        "embedder = LlamaCppEmbedder(resolve_model(DEFAULT_EMBEDDING_MODEL))\n"
        "assert embedder.embed('hello').shape == (384,)\n"
        "print(loaded_cpu_backend().variant)\n"
    )
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": pythonpath}
    env.pop("DATAPRODUCTS_CPU_VARIANT", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    chosen = done.stdout.strip().splitlines()[-1]
    assert chosen in {variant_name(v) for v in variants}
    assert f"embeddings.cpu_backend llama.cpp CPU backend: {chosen}" in done.stderr
    verdicts = json.loads((tmp_path / "dataproducts" / "cpu-backend.json").read_text(encoding="utf-8"))
    (verdict,) = verdicts.values()
    assert verdict["variant"] == chosen
    assert verdict["probed_with"] == "all-minilm-l6-v2-q8_0.gguf"
    better = [variant_name(v) for v in variants[: [variant_name(v) for v in variants].index(chosen)]]
    assert sorted(verdict["rejected"]) == sorted(better)  # every better-ranked variant was tried and refused


def test_a_variant_file_that_cannot_load_is_never_chosen(
    portable: Path, embedding_model_path: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "libggml-cpu-sapphirerapids.so"
    corrupt.write_bytes(b"\x7fELF this is not a shared library")
    good = tmp_path / portable.name
    good.symlink_to(portable)
    verdict = choose_variant([corrupt, good], embedding_model_path, cache_file=tmp_path / "verdicts.json")
    assert verdict.variant == variant_name(portable)
    assert verdict.path == str(good)
    assert verdict.rejected["sapphirerapids"].startswith("probe failed (exit 4): cannot load")


def test_a_variant_whose_probe_is_killed_by_a_signal_is_never_chosen(
    portable: Path, embedding_model_path: Path, tmp_path: Path
) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a library that dies with SIGILL when loaded")
    source = tmp_path / "die.c"
    source.write_text(SIGILL_ON_LOAD, encoding="utf-8")
    crashing = tmp_path / "libggml-cpu-zen4.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(crashing), str(source)], check=True)
    good = tmp_path / portable.name
    good.symlink_to(portable)
    cache = tmp_path / "verdicts.json"

    verdict = choose_variant([crashing, good], embedding_model_path, cache_file=cache)
    assert verdict.variant == variant_name(portable)
    assert verdict.rejected == {"zen4": "killed by SIGILL"}
    assert not verdict.cached

    again = choose_variant([crashing, good], embedding_model_path, cache_file=cache)
    assert again.cached
    assert again.variant == verdict.variant


def test_no_surviving_variant_is_an_error_that_names_each_reason(embedding_model_path: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "libggml-cpu-haswell.so"
    corrupt.write_bytes(b"not a library")
    with pytest.raises(EmbeddingError, match=r"no llama.cpp CPU backend variant runs on this machine \(haswell: "):
        choose_variant([corrupt], embedding_model_path, cache_file=None)
