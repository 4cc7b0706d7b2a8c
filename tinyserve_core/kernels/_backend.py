"""Chooses the implementation of the ops for a device, and builds the CUDA one lazily.

CPU tensors always use the torch reference. CUDA tensors use the compiled extension
(tinyserve_core/csrc/, package data), built on first CUDA use with
torch.utils.cpp_extension.load + ninja into torch's extension cache (never next to the
sources, which may sit in a read-only site-packages); later processes load the cached
build. Without a GPU or without nvcc the reference runs and says so once.
TINYSERVE_KERNELS=reference|cuda forces a backend. Importing this module never compiles
anything."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import torch

from ..resources import csrc_dir
from ..toolchain import arch_flag, nvcc_path
from . import reference

EXT_NAME = "tinyserve_kernels"
CSRC = csrc_dir()
SOURCES = ("bindings.cpp", "attention_ops.cu", "cache_ops.cu", "alloc_ops.cu", "quant_ops.cu",
           "twostage_ops.cu", "fp8_ops.cu", "fused_ops.cu", "stats_ops.cu",
           "sparse_ops.cu")
# A build lock older than this with no process building in its folder was left by an
# interrupted build (torch's FileBaton would otherwise wait on it forever).
STALE_LOCK_SECONDS = float(os.environ.get("TINYSERVE_BUILD_LOCK_STALE_S", 600))

_warned = False
_state: dict = {"status": "not built", "seconds": None, "error": None, "arch": None,
                "build_dir": None}
_ext = None


def _forced() -> str | None:
    v = os.environ.get("TINYSERVE_KERNELS", "").strip().lower()
    if v in ("", "auto"):
        return None
    if v not in ("reference", "cuda"):
        raise ValueError(f"TINYSERVE_KERNELS: {v!r} is not one of reference, cuda, auto")
    return v


def _say_once(msg: str) -> None:
    global _warned
    if not _warned:
        print(f"tinyserve: {msg}", file=sys.stderr)
        _warned = True


def _target_capability() -> tuple[int, int]:
    # TINYSERVE_CUDA_ARCH=9.0 lets a machine without a GPU compile-check the extension.
    forced = os.environ.get("TINYSERVE_CUDA_ARCH", "").strip().rstrip("a")
    if forced:
        major, minor = forced.split(".")
        return int(major), int(minor)
    return torch.cuda.get_device_capability(torch.cuda.current_device())


def build_dir() -> Path:
    from torch.utils import cpp_extension

    try:
        return Path(cpp_extension._get_build_directory(EXT_NAME, verbose=False))
    except Exception:  # private helper moved: fall back to the documented root
        return Path(cpp_extension.get_default_build_root()) / EXT_NAME


def _builder_alive(folder: Path) -> bool:
    """Whether some process is working in `folder` (ninja and nvcc run there)."""
    target = str(folder.resolve())
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{pid}/cwd") == target:
                return True
        except OSError:
            continue
    return False


def clear_stale_lock(folder: Path, max_age_s: float = STALE_LOCK_SECONDS) -> bool:
    """Remove `folder/lock` when it is older than max_age_s and nobody builds there."""
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age_s or _builder_alive(folder):
        return False
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    print(f"tinyserve: removed a stale build lock ({age / 60:.0f} min old) in {folder}",
          file=sys.stderr)
    return True


def build(verbose: bool = False):
    """Compile (or load the cached build of) the extension and return it. No thread
    lock: the first CUDA op of a process runs on its engine's loop (the GUI thread never
    builds; separate processes are kept apart by torch's file lock in the build folder)."""
    global _ext
    if _ext is not None:
        return _ext
    from torch.utils.cpp_extension import load

    cap = _target_capability()
    flag = arch_flag(cap)
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(folder)
    _state.update(arch=flag.split("code=")[-1], build_dir=str(folder))
    print(f"tinyserve: building CUDA kernels for {_state['arch']} in {folder} "
          "(first use compiles, ~1 min; later runs load the cache) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        ext = load(
            name=EXT_NAME,
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=["-O3", "-std=c++17"],
            # No --use_fast_math: page_scores rounds toward +inf to keep its bound exact.
            extra_cuda_cflags=["-O3", "-std=c++17", flag, "-lineinfo"],
            extra_include_paths=[str(CSRC)],
            build_directory=str(folder),
            verbose=verbose,
        )
    except Exception as e:  # report, then let the caller decide (reference or raise)
        _state.update(status="failed", error=f"{type(e).__name__}: {e}".strip()[-2000:],
                      seconds=time.perf_counter() - t0)
        raise
    # the wrappers get the extension from here (they never import this module, so
    # loader and wrappers form no import cycle); bound before `_ext` is published,
    # so the early return above never hands out unbound wrappers
    from . import _cuda_ops, tuning

    tuning.apply(ext)  # this GPU's row of csrc/tuning.json (the split and scoring plans)
    _cuda_ops.bind(ext)
    _ext = ext
    _state.update(status="built", seconds=time.perf_counter() - t0, error=None)
    print(f"tinyserve: CUDA kernels ready in {_state['seconds']:.1f} s", file=sys.stderr)
    return _ext


def _unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    if nvcc_path() is None:
        return "nvcc not found (set CUDA_HOME)"
    if _state["status"] == "failed":
        return f"build failed: {_state['error']}"
    return None


def _cuda_ops() -> types.ModuleType | None:
    """The CUDA ops (wrappers over the built extension), or None when it cannot be had."""
    if _ext is not None:
        from . import _cuda_ops

        return _cuda_ops
    if _unavailable_reason() is not None:
        return None
    try:
        build()
    except Exception:
        return None
    from . import _cuda_ops

    return _cuda_ops


def backend_for(device: torch.device) -> types.ModuleType:
    forced = _forced()
    if device.type != "cuda" or forced == "reference":
        return reference
    ops = _cuda_ops()
    if ops is None:
        reason = _unavailable_reason()
        if forced == "cuda":
            raise RuntimeError(f"TINYSERVE_KERNELS=cuda but the CUDA extension is not available: {reason}")
        _say_once(f"CUDA extension not available ({reason}); using the torch reference kernels")
        return reference
    return ops


def backend_info(build_now: bool = False) -> dict:
    """What `tinyserve info` prints: active backend for CUDA tensors, why, GPU, build state.
    With build_now the extension is built (or loaded from the cache) first."""
    forced = _forced()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if build_now and forced != "reference" and _unavailable_reason() is None:
        try:
            build()
        except Exception:
            pass
    reason = _unavailable_reason()
    if forced == "reference":
        backend, why = "reference", "forced by TINYSERVE_KERNELS=reference"
    elif reason is not None:
        backend, why = "reference", reason
    elif _state["status"] == "built":
        backend, why = "cuda", "extension built" + (" (forced)" if forced == "cuda" else "")
    else:
        backend, why = "cuda", "extension builds on first CUDA use"
    return {
        "backend": backend,
        "reason": why,
        "gpu": gpu,
        "build_status": _state["status"],
        "build_seconds": _state["seconds"],
        "build_error": _state["error"],
        "arch": _state["arch"],
        "build_dir": _state["build_dir"],
        "nvcc": nvcc_path(),
    }
