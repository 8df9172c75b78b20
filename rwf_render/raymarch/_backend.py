"""Finding the compiled marcher: prebuilt in the cache -> built now (once, with a message) -> disabled, one warning.

Importing this module does nothing. :func:`load` looks for ``<cache>/ext-<kind>-<hash>/<name>.so``, where the hash
covers the C++/CUDA sources, the torch and Python versions and the compiler flags, so a changed source or a new torch
gets a fresh build and an old build is never loaded against the wrong headers. The cache is ``$RWF_CACHE`` or
``~/.cache/rwf_render``. ``RWF_NO_BUILD=1`` forbids building (a prebuilt extension is still used).

``python -m rwf_render.raymarch.build`` builds ahead of time (what the install script calls).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ..errors import RwfRuntimeWarning

CSRC = Path(__file__).resolve().parent / "csrc"
KINDS = ("cpu", "cuda")
SOURCES = {"cpu": ("bindings.cpp", "cpu.cpp", "hashgrid.cpp"),
           "cuda": ("bindings.cpp", "cpu.cpp", "hashgrid.cpp", "cuda.cu")}
HEADERS = ("march.h", "cpu.h")
# torch adds the C++ standard its headers need; no FMA contraction, so the kernels compute the twin's bits
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")
LDFLAGS = ("-fopenmp",)
CUDA_CFLAGS = ("-O3", "--fmad=false", "-DRWF_WITH_CUDA")

_loaded: dict[str, ModuleType | None] = {}
_reasons: dict[str, str] = {}
_warned: set[str] = set()


def cache_root() -> Path:
    return Path(os.environ.get("RWF_CACHE") or Path.home() / ".cache" / "rwf_render")


def _tag(kind: str) -> str:
    h = hashlib.sha1()
    for name in SOURCES[kind] + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(f"{kind}|{torch.__version__}|{sys.version_info[:2]}|{CFLAGS}|{LDFLAGS}|{CUDA_CFLAGS}".encode())
    return h.hexdigest()[:12]


def build_dir(kind: str) -> Path:
    return cache_root() / f"ext-{kind}-{_tag(kind)}"


def module_name(kind: str) -> str:
    return f"rwf_raymarch_{kind}_{_tag(kind)}"


def _import_built(kind: str) -> ModuleType | None:
    so = build_dir(kind) / f"{module_name(kind)}.so"
    if not so.is_file():
        return None
    spec = importlib.util.spec_from_file_location(module_name(kind), so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cannot_build(kind: str) -> str | None:
    """Why ``kind`` cannot be built here, or None."""
    if os.environ.get("RWF_NO_BUILD") == "1":
        return "RWF_NO_BUILD=1 forbids building it"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH)"
    if shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return f"this torch ({torch.__version__}) is a CPU-only build"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        from torch.utils.cpp_extension import CUDA_HOME  # noqa: PLC0415  (imports are slow; only when building)
        if CUDA_HOME is None or shutil.which("nvcc") is None and not (Path(CUDA_HOME) / "bin" / "nvcc").is_file():
            return "nvcc (the CUDA toolkit) was not found"
    return None


def build(kind: str, verbose: bool = False) -> ModuleType:
    """Compile ``kind`` into the cache now (a no-op when it is there) and return the module; raises on failure."""
    from torch.utils import cpp_extension  # noqa: PLC0415

    reason = _cannot_build(kind)
    if reason is not None:
        raise RuntimeError(reason)
    out = build_dir(kind)
    out.mkdir(parents=True, exist_ok=True)
    fd = _builder_lock(out, kind)
    try:
        module = _import_built(kind)  # another process built it while this one waited
        if module is not None:
            return module
        # torch's own lock file (a FileBaton it polls forever): a builder killed mid-build leaves it behind, and every
        # later build waited for it without end. Whoever holds BUILD_LOCK is the only live builder, so it is stale.
        (out / "lock").unlink(missing_ok=True)
        print(f"rwf_render: building the ray marcher's {kind.upper()} kernel (once, ~45 s) into {out} ...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        module = cpp_extension.load(
            name=module_name(kind), sources=[str(CSRC / s) for s in SOURCES[kind]], build_directory=str(out),
            extra_cflags=list(CFLAGS) + (["-DRWF_WITH_CUDA"] if kind == "cuda" else []),
            extra_ldflags=list(LDFLAGS), extra_cuda_cflags=list(CUDA_CFLAGS), extra_include_paths=[str(CSRC)],
            with_cuda=kind == "cuda", verbose=verbose)  # copies: torch appends to the lists it is given
        print(f"rwf_render: built the {kind.upper()} kernel in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        return module
    finally:
        if fd is not None:
            os.close(fd)


BUILD_LOCK = ".rwf-build.lock"
"""held (flock, exclusive) by the process building a kernel into its folder: the lock goes with the process, however
it ends, where torch's lock file stays behind a killed build"""


def _builder_lock(out: Path, kind: str) -> int | None:
    """A descriptor holding the exclusive lock on ``out / BUILD_LOCK``, waiting (Ctrl+C stops the wait) while another
    process builds; None where there are no advisory locks (Windows, some network file systems)."""
    from ..locks import flock  # noqa: PLC0415

    try:
        import fcntl  # noqa: PLC0415
        (out / BUILD_LOCK).touch()
    except (ImportError, OSError):  # no advisory locks (Windows), or a folder that takes no file
        return None
    try:
        return flock(out / BUILD_LOCK, fcntl.LOCK_EX)
    except BlockingIOError:
        print(f"rwf_render: waiting for another process building the {kind.upper()} kernel into {out} ...",
              file=sys.stderr, flush=True)
        return flock(out / BUILD_LOCK, fcntl.LOCK_EX, wait=True)


def load(kind: str, allow_build: bool = True) -> ModuleType | None:
    """The compiled module for ``kind`` ("cpu" or "cuda"), or None (see :func:`reason`). Remembered per process."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind in _loaded:
        return _loaded[kind]
    module, why = None, None
    try:
        module = _import_built(kind)
    except Exception as e:  # noqa: BLE001  (a broken or foreign build: rebuild it)
        why = f"the cached build did not load ({e})"
        (build_dir(kind) / f"{module_name(kind)}.so").unlink(missing_ok=True)
    if module is None and not allow_build:
        return None  # not remembered: a later call may build
    if module is None:
        try:
            module = build(kind)
        except Exception as e:  # noqa: BLE001
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            why = lines[0] if lines else type(e).__name__
            if len(lines) > 1:
                why += f" (log in {build_dir(kind)})"
    _loaded[kind] = module
    if module is None:
        _reasons[kind] = why or "unknown reason"
    return module


def reason(kind: str) -> str | None:
    """Why ``kind`` is unavailable (after :func:`load` returned None), else None."""
    return _reasons.get(kind)


def warn_fallback(kind: str) -> None:
    """Say once per process that the torch marcher runs instead of ``kind``, and why."""
    if kind in _warned:
        return
    _warned.add(kind)
    warnings.warn(f"rwf_render.raymarch: the compiled {kind.upper()} marcher is unavailable: {reason(kind)}; "
                  f"using the pure-torch marcher (same samples, slower: it tests every step along a ray, "
                  f"most of all with several grid cascades and --cone-angle 0)", RwfRuntimeWarning, stacklevel=4)


def _reset() -> None:
    """Forget what was loaded (tests)."""
    _loaded.clear()
    _reasons.clear()
    _warned.clear()
