"""Builds and loads the compiled frame loop (csrc/kernels/scene_frame.cuh) for a device.

The same per-ray header compiles twice: for the CPU with the system C++ compiler
(csrc/scene_cpu.cpp, about a second) and for the GPU with nvcc (csrc/scene_ops.cu, a few
seconds), each into a plain shared library loaded with ctypes, no torch headers. The
builds go to a per-user cache (TINYSERVE_CACHE, else $XDG_CACHE_HOME/tinyserve, else
~/.cache/tinyserve), never next to the package sources (a read-only site-packages), named
by a hash of the sources, the command and the machine, so a later process loads the
library at once and a changed source or flag builds afresh. A file lock keeps two
processes from building the same library at the same time.

When there is no compiler or the build fails the torch frames run and say so once.
TINYSERVE_SCENE_FRAMES=torch forces the torch frames, =compiled makes a missing library
an error, =auto (or unset) uses the compiled frames where they build."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from ..errors import ConfigError, InputFileError
from ..loaders import read_bytes, read_text
from ..resources import csrc_dir
from ..toolchain import arch_flag, nvcc_path

ENV = "TINYSERVE_SCENE_FRAMES"
HEADERS = (Path("kernels") / "scene_frame.cuh", Path("kernels") / "scene_splat.cuh")
CPU_SOURCE, CUDA_SOURCE = "scene_cpu.cpp", "scene_ops.cu"
# -fno-math-errno: floorf and friends inline (the loop never reads errno); no fast-math,
# which would let the compiler reassociate the compositing sums away from the torch frame's
CPU_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
CUDA_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC")
BUILD_TIMEOUT_S = 300

# the fixed-size arrays of FrameParams
Floats3, Floats9, Ints3 = ctypes.c_float * 3, ctypes.c_float * 9, ctypes.c_int32 * 3
_P = ctypes.c_void_p


class FrameParams(ctypes.Structure):
    """tinyserve::scene::FrameParams, field for field (the library checks the size)."""
    _fields_ = [("eye", Floats3), ("rot", Floats9), ("focal", ctypes.c_float), ("width", ctypes.c_int32),
                ("height", ctypes.c_int32), ("lo", Floats3), ("hi", Floats3), ("voxel", ctypes.c_float), ("cells", Ints3),
                ("padded", Ints3), ("air", ctypes.c_int32), ("classes", ctypes.c_int32),
                ("kept_classes", ctypes.c_int32), ("step", ctypes.c_float), ("first_window", ctypes.c_int32),
                ("window", ctypes.c_int32), ("max_rounds", ctypes.c_int32), ("max_trace", ctypes.c_int32),
                ("t_stop", ctypes.c_float), ("app_eps", ctypes.c_float), ("t_negligible", ctypes.c_float),
                ("background", Floats3),
                ("row", _P), ("density", _P), ("colour", _P), ("class_corners", _P), ("class_ids", _P),
                ("trace_skip", _P), ("start", _P), ("pixels", _P), ("n", ctypes.c_int64),
                ("rgb", _P), ("depth", _P), ("acc", _P), ("probs", _P)]


_libs: dict[str, ctypes.CDLL | None] = {}
_said: set[str] = set()


def mode() -> str:
    v = os.environ.get(ENV, "").strip().lower() or "auto"
    if v not in ("auto", "torch", "compiled"):
        raise ConfigError(ENV, f"must be torch, compiled or auto, got {v!r}")
    return v


def cache_dir() -> Path:
    root = os.environ.get("TINYSERVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tinyserve")
    return Path(root) / "scene_frames"


def _machine() -> str:
    """What a -march=native build depends on: the CPU's architecture and feature flags (a
    cache shared by two machines must not hand one the other's instructions)."""
    try:
        info = read_text("/proc/cpuinfo", max_bytes=1 << 24, field="cpu flags")
    except InputFileError:  # not Linux: the architecture alone
        info = ""
    flags = next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "")
    return platform.machine() + flags


def build_key(sources: list[Path], command: list[str], machine: str) -> str:
    """Hash of the sources' bytes, the compile command and the machine: the library's name."""
    h = hashlib.sha256()
    for s in sources:
        h.update(s.name.encode() + b"\0" + read_bytes(s, max_bytes=1 << 20, field="scene frame source") + b"\0")
    h.update("\0".join(command).encode() + b"\0" + machine.encode())
    return h.hexdigest()[:20]


def _say_once(key: str, msg: str) -> None:
    if key not in _said:
        _said.add(key)
        print(f"tinyserve: {msg}", file=sys.stderr)


def build_sources(source: str) -> list[Path]:
    """The files a library built from csrc/`source` is made of (what its name hashes)."""
    csrc = csrc_dir()
    return [csrc / source, *(csrc / h for h in HEADERS)]


def build(kind: str, command: list[str], source: str, machine: str, out_dir: Path | None = None) -> Path:
    """The library built from csrc/`source` by `command` (compiler and flags; the source,
    include folder and output are added), from the cache when it is there."""
    csrc = csrc_dir()
    key = build_key(build_sources(source), command, machine)
    out_dir = out_dir or cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home, say: name the way out, not only the errno
        raise OSError(f"cannot create the build cache {out_dir} ({e.strerror or e}); "
                      f"set TINYSERVE_CACHE to a writable folder") from e
    lib = out_dir / f"scene_frame_{kind}-{key}.so"
    if lib.exists():
        return lib
    # the lock file is empty, a handle to lock, not content (writers.py is for content)
    with open(out_dir / f"scene_frame_{kind}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we die
        if lib.exists():  # another process built it while we waited
            return lib
        tmp = out_dir / f".scene_frame_{kind}-{key}.{os.getpid()}.so"
        cmd = [*command, f"-I{csrc}", str(csrc / source), "-o", str(tmp)]
        print(f"tinyserve: building the scene frame loop for {kind} in {out_dir} (first use, a few seconds) ...",
              file=sys.stderr, flush=True)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout)[-1500:]}")
            os.replace(tmp, lib)  # whole or not at all: a reader never sees half a library
        finally:
            tmp.unlink(missing_ok=True)
    return lib


def _cpu_command() -> list[str] | None:
    # $CXX as make reads it: a compiler with words of its own ("ccache g++", "g++ -m64")
    cxx = shlex.split(os.environ.get("CXX", "")) or [
        c for c in (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"),) if c]
    return [*cxx, *CPU_FLAGS] if cxx else None


def _cuda_command(device: torch.device) -> list[str] | None:
    nvcc = nvcc_path()
    if nvcc is None:
        return None
    return [nvcc, *CUDA_FLAGS, arch_flag(torch.cuda.get_device_capability(device))]


def _load(kind: str, path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    size = lib.scene_frame_params_size()
    if size != ctypes.sizeof(FrameParams):  # the ctypes mirror and the header disagree
        raise RuntimeError(f"FrameParams is {size} bytes in {path.name}, {ctypes.sizeof(FrameParams)} in Python")
    lib.scene_frame_render.restype = ctypes.c_int
    # CPU: (params); GPU: (params, stream handle, device index)
    lib.scene_frame_render.argtypes = [ctypes.c_void_p] + ([ctypes.c_void_p, ctypes.c_int] if kind == "cuda" else [])
    if kind == "cuda":
        lib.scene_frame_error.restype = ctypes.c_char_p
    return lib


def _build_and_load(kind: str, command: list[str], source: str, machine: str) -> ctypes.CDLL:
    path = build(kind, command, source, machine)
    try:
        return _load(kind, path)
    except OSError:
        # a cached file that does not load (cut short when a machine went down between the
        # compile and the disk, say) would fall back to the torch frames for good: built
        # once more (a process that has it loaded keeps its copy)
        path.unlink(missing_ok=True)
        return _load(kind, build(kind, command, source, machine))


def library(device: torch.device) -> ctypes.CDLL | None:
    """The compiled frame loop for `device` (built on first use), or None: the torch
    frames run instead, having said why once."""
    m = mode()
    if m == "torch":
        return None
    kind = "cuda" if device.type == "cuda" else "cpu"
    tag = f"{kind}:{device.index or 0}" if kind == "cuda" else kind
    if tag in _libs:
        return _libs[tag]
    lib, why = None, None
    command = _cuda_command(device) if kind == "cuda" else _cpu_command()
    if command is None:
        why = "no nvcc (set CUDA_HOME)" if kind == "cuda" else "no C++ compiler (c++, g++, clang++ or $CXX)"
    else:
        try:
            lib = _build_and_load(kind, command, CUDA_SOURCE if kind == "cuda" else CPU_SOURCE,
                                  command[-1] if kind == "cuda" else _machine())
        except (OSError, RuntimeError, subprocess.SubprocessError, InputFileError) as e:
            why = f"build failed: {str(e).strip()[-800:]}"
    if lib is None:
        if m == "compiled":
            raise ConfigError(ENV, f"compiled, but the {kind} frame library is not available: {why}")
        _say_once(tag, f"compiled scene frames for {kind} not available ({why}); using the torch frames")
    _libs[tag] = lib
    return lib
