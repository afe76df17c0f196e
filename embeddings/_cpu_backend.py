"""Runtime CPU dispatch for llama.cpp: load the best ggml CPU backend variant that really runs on this machine.

``.ci/setup`` builds llama-cpp-python with ``GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON``: one
``libggml-cpu-<variant>.so`` per x86 micro-architecture (x64 … haswell … icelake, zen4, sapphirerapids) lies beside
``libllama.so`` and none is linked in. ggml's own ``ggml_backend_load_all`` would take the variant with the highest
CPUID score, but that score ignores what the operating system allows: a VM that advertises AMX it traps kills the
process with SIGILL. llama-cpp-python does not expose the loader either (its issue #2069), so this module does the
choice itself, through ctypes, before the first model load:

1. candidates best first (:data:`PREFERENCE`);
2. each is probed in a child process (``python -m embeddings._cpu_backend VARIANT [MODEL]``) that loads it and
   embeds one text with the real model; a variant that the CPU does not support, that does not load, or whose
   child dies (a signal such as SIGILL, a timeout) or returns a bad vector is rejected, and the first clean one wins;
3. the verdict is cached in ``~/.cache/dataproducts/cpu-backend.json`` keyed by the library build (names, sizes
   and times of the backend files), the CPU's identity and the probe model, so the probes run once per machine
   and build; ``DATAPRODUCTS_CPU_VARIANT=<variant>`` restricts the choice to one variant (still probed).

A build without variant files (the CPU backend linked in, as before) needs nothing: the choice is ``built-in``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catalog.errors import EmbeddingError
from embeddings.models import DEFAULT_EMBEDDING_MODEL, card_for, default_models_dir

__all__ = [
    "PREFERENCE",
    "CpuBackend",
    "choose_variant",
    "load_cpu_backend",
    "loaded_cpu_backend",
    "probe_model_for",
    "variant_files",
]

_log = logging.getLogger("embeddings.cpu_backend")

# ggml's x86 variants, best first (ggml/src/CMakeLists.txt, GGML_CPU_ALL_VARIANTS); unknown names go after these.
PREFERENCE: tuple[str, ...] = (
    "sapphirerapids",
    "zen4",
    "cooperlake",
    "icelake",
    "cascadelake",
    "cannonlake",
    "skylakex",
    "alderlake",
    "haswell",
    "piledriver",
    "ivybridge",
    "sandybridge",
    "sse42",
    "x64",
)
PROBE_TEXT = "A probe sentence: the CPU backend must embed it without crashing."
PROBE_TIMEOUT_SECONDS = 300.0
_PREFIX, _SUFFIX = "libggml-cpu-", ".so"
_EXIT_UNSUPPORTED, _EXIT_UNLOADABLE, _EXIT_BAD_VECTOR = 3, 4, 5
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CpuBackend:
    """The CPU backend variant in use: its name, file, the model it was probed with and why others were rejected."""

    variant: str
    path: str | None = None
    probed_with: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        """One line for logs and CLI output: ``icelake (rejected: sapphirerapids: killed by SIGILL)``."""
        rejected = "; ".join(f"{name}: {why}" for name, why in self.rejected.items())
        return self.variant + (f" (rejected: {rejected})" if rejected else "")


_loaded: CpuBackend | None = None
_lock = threading.Lock()


def loaded_cpu_backend() -> CpuBackend | None:
    """The variant this process loaded, or ``None`` before the first model load."""
    return _loaded


def variant_name(path: Path) -> str:
    return path.name.removeprefix(_PREFIX).split(_SUFFIX)[0]


def variant_files(lib_dir: Path) -> list[Path]:
    """The ``libggml-cpu-<variant>.so`` files in ``lib_dir``, best first; empty for a build without variants."""
    found = {variant_name(p): p for p in lib_dir.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file()}
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    return [found[name] for name in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))]


def _cpu_identity() -> str:
    """Vendor, model and feature flags as the kernel reports them (``/proc/cpuinfo``), else ``platform``'s view."""
    wanted = ("vendor_id", "model name", "flags", "microcode")
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    lines = text.split("\n\n", 1)[0].splitlines()
    return "\n".join(line for line in lines if line.split(":", 1)[0].strip() in wanted)


def _cache_key(candidates: list[Path], probe_model: Path | None) -> str:
    digest = hashlib.sha256(_cpu_identity().encode())
    for path in candidates:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    if probe_model is not None:
        stat = probe_model.stat()
        digest.update(f"{probe_model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def default_cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dataproducts" / "cpu-backend.json"


def _read_cache(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, key: str, verdict: CpuBackend) -> None:
    data = _read_cache(cache_file)
    data[key] = {k: v for k, v in asdict(verdict).items() if k != "cached"}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(cache_file)
    except OSError as exc:  # a read-only home only costs the probes next time
        _log.warning("cannot cache the CPU backend verdict in %s: %s", cache_file, exc)


def _probe(candidate: Path, probe_model: Path | None) -> str | None:
    """``None`` when ``candidate`` loaded and embedded cleanly in a child process, else why not."""
    cmd = [sys.executable, "-m", "embeddings._cpu_backend", str(candidate)]
    if probe_model is not None:
        cmd.append(str(probe_model))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.pop("DATAPRODUCTS_CPU_VARIANT", None)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, env=env, check=False)
    except subprocess.TimeoutExpired:
        return f"probe timed out after {PROBE_TIMEOUT_SECONDS:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        try:
            return f"killed by {signal.Signals(-done.returncode).name}"
        except ValueError:
            return f"killed by signal {-done.returncode}"
    tail = (done.stderr or done.stdout).strip().splitlines()
    reason = tail[-1] if tail else "no output"
    if done.returncode == _EXIT_UNSUPPORTED:
        return "not supported by this CPU"
    return f"probe failed (exit {done.returncode}): {reason}"


def choose_variant(candidates: list[Path], probe_model: Path | None, *, cache_file: Path | None = None) -> CpuBackend:
    """The first of ``candidates`` (best first) that loads and embeds cleanly in a child process.

    The verdict is read from and written to ``cache_file`` when one is given.

    Raises:
        EmbeddingError: no candidate survived its probe (each one's reason is in the message).
    """
    key = _cache_key(candidates, probe_model)
    cached = _read_cache(cache_file).get(key) if cache_file else None
    if isinstance(cached, dict) and cached.get("path") in {str(c) for c in candidates}:
        return CpuBackend(**{**cached, "cached": True})
    rejected: dict[str, str] = {}
    for candidate in candidates:
        reason = _probe(candidate, probe_model)
        if reason is None:
            verdict = CpuBackend(
                variant_name(candidate),
                str(candidate),
                probed_with=probe_model.name if probe_model else None,
                rejected=rejected,
            )
            if cache_file:
                _write_cache(cache_file, key, verdict)
            return verdict
        _log.info("llama.cpp CPU backend %s rejected: %s", variant_name(candidate), reason)
        rejected[variant_name(candidate)] = reason
    detail = "; ".join(f"{name}: {why}" for name, why in rejected.items()) or "no candidates"
    raise EmbeddingError(f"no llama.cpp CPU backend variant runs on this machine ({detail})")


def probe_model_for(model_path: Path | None = None) -> Path | None:
    """The model a probe embeds with: the default embedding model if built, else ``model_path`` if it is a
    carded embedding model, else ``None`` (the probes then only load the variants)."""
    default = default_models_dir() / f"{DEFAULT_EMBEDDING_MODEL}.gguf"
    if default.is_file():
        return default
    if model_path is not None and model_path.suffix == ".gguf" and model_path.is_file():
        try:
            card = card_for(model_path)
        except EmbeddingError:
            return None
        if card is not None and card.kind == "embedding":
            return model_path
    return None


def _libggml(lib_dir: Path) -> ctypes.CDLL:
    """The libggml that libllama itself uses: a wheel stores ``libggml.so``, ``.so.0`` and ``.so.0.x`` as
    copies, not links, and loading another copy would register the backend in a registry libllama never reads."""
    path = lib_dir / "libggml.so"
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        maps = ""
    for line in maps.splitlines():
        loaded = Path(line.split(maxsplit=5)[-1]) if line.count(" ") >= 5 else None
        if loaded is not None and loaded.parent == lib_dir and loaded.name.startswith("libggml.so"):
            path = loaded
            break
    lib = ctypes.CDLL(str(path))
    lib.ggml_backend_load.restype = ctypes.c_void_p
    lib.ggml_backend_load.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_count.argtypes = []
    return lib


def _lib_dir(llama_cpp: Any) -> Path:
    return Path(llama_cpp.__file__).resolve().parent / "lib"


def load_cpu_backend(llama_cpp: Any, probe_model: Path | None = None) -> CpuBackend:
    """Load the chosen CPU backend variant into this process (once; later calls return the first choice).

    ``probe_model`` is a GGUF embedding model the probes embed one text with (without one a probe only loads the
    variant, and that weaker verdict is not cached). Call before the first model load.

    Raises:
        EmbeddingError: ``DATAPRODUCTS_CPU_VARIANT`` names no built variant, no variant runs, or ggml refuses it.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        lib_dir = _lib_dir(llama_cpp)
        candidates = variant_files(lib_dir)
        if not candidates:
            if _libggml(lib_dir).ggml_backend_reg_count() == 0:
                raise EmbeddingError(
                    f"this llama-cpp-python loads its CPU backend at run time (GGML_BACKEND_DL) but {lib_dir} "
                    "holds no libggml-cpu-*.so; rebuild it with -DGGML_BACKEND_DIR:STRING=llama_cpp/lib (typed: "
                    "CMake makes an untyped relative path absolute against the source folder)"
                )
            _loaded = CpuBackend("built-in")
            _log.info("llama.cpp CPU backend: built-in (this llama-cpp-python has no CPU variants)")
            return _loaded
        forced = os.environ.get("DATAPRODUCTS_CPU_VARIANT")
        if forced:
            candidates = [c for c in candidates if variant_name(c) == forced]
            if not candidates:
                names = ", ".join(variant_name(c) for c in variant_files(lib_dir))
                raise EmbeddingError(
                    f"DATAPRODUCTS_CPU_VARIANT={forced!r} is not a built variant; choose one of {names}"
                )
        if probe_model is not None and not probe_model.is_file():
            probe_model = None
        cache_file = default_cache_file() if probe_model is not None else None
        verdict = choose_variant(candidates, probe_model, cache_file=cache_file)
        _activate(lib_dir, verdict)
        _loaded = verdict
        _log.info("llama.cpp CPU backend: %s%s", verdict.describe(), " (cached verdict)" if verdict.cached else "")
        return verdict


def _activate(lib_dir: Path, verdict: CpuBackend) -> None:
    assert verdict.path is not None
    lib = _libggml(lib_dir)
    if not lib.ggml_backend_load(verdict.path.encode()):
        raise EmbeddingError(
            f"ggml could not load the CPU backend {verdict.path}; delete {default_cache_file()} to probe again"
        )


def probe_main(argv: list[str]) -> int:
    """The child side of a probe: load ``argv[0]`` (a variant file) and embed one text with ``argv[1]`` if given."""
    global _loaded
    variant, model = Path(argv[0]), (Path(argv[1]) if len(argv) > 1 else None)
    try:
        import llama_cpp

        score = ctypes.CDLL(str(variant)).ggml_backend_score
        score.restype = ctypes.c_int
        if score() == 0:
            return _EXIT_UNSUPPORTED
        _activate(_lib_dir(llama_cpp), CpuBackend(variant_name(variant), str(variant)))
    except (OSError, AttributeError, EmbeddingError) as exc:
        print(f"cannot load {variant.name}: {exc}", file=sys.stderr)
        return _EXIT_UNLOADABLE
    _loaded = CpuBackend(variant_name(variant), str(variant))
    if model is None:
        return 0
    import numpy as np

    from embeddings.llamacpp import LlamaCppEmbedder

    embedder = LlamaCppEmbedder(model, n_threads=1, contexts=1, cache_size=0)
    vector = embedder.embed_batch([PROBE_TEXT])[0]
    embedder.close()
    if not (np.isfinite(vector).all() and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3):
        print(f"{variant.name} returned a bad vector", file=sys.stderr)
        return _EXIT_BAD_VECTOR
    return 0


if __name__ == "__main__":
    from embeddings._cpu_backend import probe_main as _probe_main  # this module's globals, not __main__'s

    sys.exit(_probe_main(sys.argv[1:]))
